from linewatch.pipeline.alerts import FrameOutcome
from linewatch.pipeline.reorder import ReorderBuffer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def outcome(seq: int, camera: str = "c") -> FrameOutcome:
    return FrameOutcome(camera, seq, seq, "free", 0.9, False)


def seqs(outcomes: list[FrameOutcome]) -> list[int]:
    return [o.seq for o in outcomes]


def test_out_of_order_frames_come_out_in_order() -> None:
    clock = Clock()
    buffer = ReorderBuffer(hold_s=2, clock=clock)
    assert buffer.push(outcome(1)) == [], "the first frame waits for earlier ones"
    clock.now = 2.0
    assert seqs(buffer.due()) == [1]
    assert seqs(buffer.push(outcome(4))) == []
    assert seqs(buffer.push(outcome(3))) == []
    assert seqs(buffer.push(outcome(2))) == [2, 3, 4]
    assert buffer.waiting() == 0


def test_a_gap_is_skipped_after_the_hold() -> None:
    clock = Clock()
    buffer = ReorderBuffer(hold_s=2, clock=clock)
    buffer.push(outcome(1))
    clock.now = 2.0
    buffer.due()
    assert buffer.push(outcome(3)) == []
    clock.now = 3.0
    assert buffer.due() == []
    clock.now = 4.5
    assert seqs(buffer.due()) == [3], "seq 2 never came"
    assert seqs(buffer.push(outcome(4))) == [4]


def test_cameras_are_independent() -> None:
    clock = Clock()
    buffer = ReorderBuffer(hold_s=1, clock=clock)
    buffer.push(outcome(5, "a"))
    buffer.push(outcome(9, "b"))
    clock.now = 1.0
    assert sorted(seqs(buffer.due())) == [5, 9]
    assert seqs(buffer.push(outcome(6, "a"))) == [6]


def test_drain_releases_everything_in_order() -> None:
    buffer = ReorderBuffer(hold_s=60)
    for seq in (3, 1, 2):
        buffer.push(outcome(seq))
    assert seqs(buffer.drain()) == [1, 2, 3] and buffer.waiting() == 0
