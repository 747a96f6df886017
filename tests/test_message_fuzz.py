"""Fuzzing the wire decoders: any bytes give a message or MessageDecodeError, nothing else."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linewatch.schemas.messages import FrameMessage, MessageDecodeError, ResultMessage
from tests.support.builders import FRAME, RESULT

field_bytes = st.binary(max_size=64)


@st.composite
def mutated(draw, original: dict[bytes, bytes]) -> dict[bytes, bytes]:  # type: ignore[no-untyped-def]
    fields = dict(original)
    for key in draw(st.lists(st.sampled_from(sorted(fields)), max_size=4)):
        if draw(st.booleans()):
            fields[key] = draw(field_bytes)
        else:
            fields.pop(key, None)
    extra = draw(st.dictionaries(field_bytes, field_bytes, max_size=3))
    return {**fields, **extra}


@pytest.mark.parametrize(
    ("decode", "original"),
    [(FrameMessage.decode, FRAME.encode()), (ResultMessage.decode, RESULT.encode())],
)
@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_decoders_never_fail_otherwise(decode, original, data) -> None:  # type: ignore[no-untyped-def]
    try:
        decode(data.draw(mutated(original)))
    except MessageDecodeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(field_bytes, field_bytes, max_size=12))
def test_arbitrary_entries_are_rejected_cleanly(fields: dict[bytes, bytes]) -> None:
    for decoder in (FrameMessage.decode, ResultMessage.decode):
        try:
            decoder(fields)
        except MessageDecodeError:
            pass
