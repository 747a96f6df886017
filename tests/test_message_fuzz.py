"""Fuzzing the wire decoders: any bytes give a message or MessageDecodeError, nothing else."""

from hypothesis import given, settings
from hypothesis import strategies as st

from linewatch.schemas.messages import FrameMessage, MessageDecodeError, ResultMessage
from tests.test_messages import FRAME, RESULT

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


@settings(max_examples=300, deadline=None)
@given(mutated(FRAME.encode()))
def test_frame_decoder_never_fails_otherwise(fields: dict[bytes, bytes]) -> None:
    try:
        FrameMessage.decode(fields)
    except MessageDecodeError:
        pass


@settings(max_examples=300, deadline=None)
@given(mutated(RESULT.encode()))
def test_result_decoder_never_fails_otherwise(fields: dict[bytes, bytes]) -> None:
    try:
        ResultMessage.decode(fields)
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
