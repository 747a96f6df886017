import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linewatch.schemas.messages import (
    MAX_IMAGE_BYTES,
    SCHEMA_VERSION,
    Box,
    FrameMessage,
    MessageDecodeError,
    ResultMessage,
)
from tests.support.builders import FRAME, RESULT


def test_frame_round_trip() -> None:
    fields = FRAME.encode()
    assert fields[b"v"] == str(SCHEMA_VERSION).encode()
    assert FrameMessage.decode(fields) == FRAME


def test_result_round_trip() -> None:
    assert ResultMessage.decode(RESULT.encode()) == RESULT


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda f: f.pop(b"seq"), "missing field 'seq'"),
        (lambda f: f.update({b"v": b"99"}), "schema version 99"),
        (lambda f: f.update({b"seq": b"seven"}), "not an integer"),
        (lambda f: f.update({b"encoding": b"gif"}), "unknown image encoding"),
        (lambda f: f.update({b"camera_id": b"\xff\xfe"}), "not UTF-8"),
        (lambda f: f.update({b"image": b""}), "missing field 'image'"),
        (lambda f: f.update({b"image": bytes(MAX_IMAGE_BYTES + 1)}), "over the .* byte limit"),
        (lambda f: f.update({b"width": b"0"}), "width 0 is outside"),
        (lambda f: f.update({b"height": b"100000"}), "height 100000 is outside"),
    ],
)
def test_malformed_frames_are_rejected_with_the_reason(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    fields = FRAME.encode()
    mutate(fields)
    with pytest.raises(MessageDecodeError, match=reason):
        FrameMessage.decode(fields)


def test_result_with_garbage_topk_is_rejected() -> None:
    fields = RESULT.encode()
    fields[b"topk"] = b"{not json"
    with pytest.raises(MessageDecodeError, match="topk"):
        ResultMessage.decode(fields)


WITH_BOXES = dataclasses.replace(
    RESULT, boxes=(Box("crack", 0.875, 20.0, 5.0, 100.5, 45.0), Box("hole", 0.5, 1, 2, 3, 4))
)


def test_result_with_boxes_round_trip_and_old_entries_have_none() -> None:
    assert ResultMessage.decode(WITH_BOXES.encode()) == WITH_BOXES
    assert b"boxes" not in RESULT.encode(), "classifier entries are unchanged on the wire"
    assert ResultMessage.decode(RESULT.encode()).boxes == ()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"{not json", "not a list of"),
        (b'{"a": 1}', "not a list of"),
        (b'[["crack", 0.9, 1, 2, 3]]', "not a list of"),
        (b"[[7, 0.9, 1, 2, 3, 4]]", "not a list of"),
        (b'[["crack", "high", 1, 2, 3, 4]]', "not a list of"),
        (b'[["crack", NaN, 1, 2, 3, 4]]', "non-finite"),
        (b'[["crack", 0.9, 1e999, 2, 3, 4]]', "non-finite"),
    ],
)
def test_result_with_garbage_boxes_is_rejected(value: bytes, reason: str) -> None:
    fields = WITH_BOXES.encode()
    fields[b"boxes"] = value
    with pytest.raises(MessageDecodeError, match=reason):
        ResultMessage.decode(fields)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=7),
    max_leaves=24,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=64), json_values.map(lambda v: json.dumps(v).encode())))
def test_any_boxes_field_gives_boxes_or_decode_error(value: bytes) -> None:
    fields = WITH_BOXES.encode()
    fields[b"boxes"] = value
    try:
        ResultMessage.decode(fields)
    except MessageDecodeError:
        pass
