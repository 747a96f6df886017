from linewatch.pipeline.alerts.reorder import ReorderBuffer
from linewatch.pipeline.alerts.rule import FrameOutcome


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
    assert seqs(buffer.push(outcome(1))) == [1]
    assert seqs(buffer.push(outcome(4))) == []
    assert seqs(buffer.push(outcome(3))) == []
    assert seqs(buffer.push(outcome(2))) == [2, 3, 4]
    assert buffer.waiting() == 0


def test_a_gap_is_skipped_after_the_hold() -> None:
    clock = Clock()
    buffer = ReorderBuffer(hold_s=2, clock=clock)
    buffer.push(outcome(1))
    assert buffer.push(outcome(3)) == []
    clock.now = 1.0
    assert buffer.due() == []
    clock.now = 2.5
    assert seqs(buffer.due()) == [3], "seq 2 never came"
    assert seqs(buffer.push(outcome(4))) == [4]


def test_cameras_are_independent() -> None:
    clock = Clock()
    buffer = ReorderBuffer(hold_s=1, clock=clock)
    buffer.push(outcome(5, "a"))
    buffer.push(outcome(9, "b"))
    assert buffer.push(outcome(7, "a")) == [], "waits for a:6, whatever b does"
    assert seqs(buffer.push(outcome(10, "b"))) == [10]
    clock.now = 1.0
    assert seqs(buffer.due()) == [7]


def test_drain_releases_everything_in_order() -> None:
    buffer = ReorderBuffer(hold_s=60)
    for seq in (1, 4, 3):
        buffer.push(outcome(seq))
    assert buffer.waiting() == 2, "3 and 4 wait for 2"
    assert seqs(buffer.drain()) == [3, 4] and buffer.waiting() == 0
