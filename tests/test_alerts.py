from linewatch.pipeline.alerts.rule import AlertEngine, FrameOutcome
from linewatch.pipeline.config import AlertSettings

SECOND = 1_000_000_000


def feed(engine: AlertEngine, pattern: str, start_seq: int = 1, camera: str = "c") -> list:
    """Pattern of frames: 'x' = crack defect, '.' = clean; one frame per second."""
    events = []
    for offset, mark in enumerate(pattern):
        seq = start_seq + offset
        outcome = FrameOutcome(
            camera, seq, seq * SECOND, "crack" if mark == "x" else "free", 0.9, mark == "x"
        )
        events += engine.feed(outcome)
    return events


def test_opens_on_k_of_n_and_closes_after_m_clean() -> None:
    engine = AlertEngine(AlertSettings(k=3, n=5, m=4, cooldown_s=0))
    events = feed(engine, "x.x.xx" + "..." + "." + "..")
    assert [(e.state, e.opened_seq) for e in events] == [("open", 5), ("closed", 5)]
    assert events[1].closed_seq == 10
    assert events[1].frames == 4


def test_isolated_defects_do_not_open() -> None:
    engine = AlertEngine(AlertSettings(k=3, n=5, m=2, cooldown_s=0))
    assert feed(engine, "x...x...x...x") == []


def test_cooldown_suppresses_reopening() -> None:
    engine = AlertEngine(AlertSettings(k=2, n=2, m=1, cooldown_s=5))
    events = feed(engine, "xx." + "xx." + "....." + "xx")
    assert [(e.state, e.opened_seq) for e in events] == [
        ("open", 2),
        ("closed", 2),
        ("open", 13),
    ]


def test_cameras_and_classes_are_independent() -> None:
    engine = AlertEngine(AlertSettings(k=2, n=3, m=1, cooldown_s=0))
    events = feed(engine, "xx", camera="a") + feed(engine, "x.", camera="b")
    assert [(e.camera_id, e.state) for e in events] == [("a", "open")]


def test_replayed_frames_are_ignored() -> None:
    engine = AlertEngine(AlertSettings(k=2, n=2, m=1, cooldown_s=0))
    assert len(feed(engine, "xx")) == 1
    assert feed(engine, "xx") == []


def test_resume_continues_an_open_event() -> None:
    first = AlertEngine(AlertSettings(k=2, n=2, m=2, cooldown_s=0))
    opened = feed(first, "xx")
    second = AlertEngine(AlertSettings(k=2, n=2, m=2, cooldown_s=0))
    second.resume(opened)
    events = feed(second, "..", start_seq=3)
    assert [(e.state, e.opened_seq, e.closed_seq) for e in events] == [("closed", 2, 4)]


def test_cooldown_runs_on_the_given_clock() -> None:
    engine = AlertEngine(AlertSettings(k=1, n=1, m=1, cooldown_s=5))
    states = []
    for seq, (mark, video_s) in enumerate([("x", 0), (".", 1), ("x", 3), (".", 4), ("x", 9)], 1):
        outcome = FrameOutcome(
            "c",
            seq,
            1000,
            "crack" if mark == "x" else "free",
            0.9,
            mark == "x",
            clock_ns=video_s * SECOND,
        )
        states += [(e.state, e.opened_seq) for e in engine.feed(outcome)]
    assert states == [("open", 1), ("closed", 1), ("open", 5)], "seq 3 is inside the cooldown"


def test_late_frames_from_parallel_workers_still_count() -> None:
    engine = AlertEngine(AlertSettings(k=3, n=5, m=2, cooldown_s=0))
    order = [5, 6, 7, 8, 1, 2, 3, 4]  # a worker finished seqs 1-4 after another's 5-8
    events = []
    for seq in order:
        mark = "x" if seq in (1, 2, 3) else "."
        events += engine.feed(
            FrameOutcome(
                "c", seq, seq * SECOND, "crack" if mark == "x" else "free", 0.9, mark == "x"
            )
        )
    assert [e.state for e in events] == ["open"], "the late defect run is not thrown away"
