"""The part verdict rule and the line alarm: pure functions of the stored view results."""

import pytest

from linewatch.pipeline.config import (
    DEFAULT_MODEL_DIR,
    LineAlarmSettings,
    VerdictSettings,
    load_settings,
)
from linewatch.pipeline.decide.line_alarm import LineAlarm
from linewatch.pipeline.decide.ng_rule import is_ng
from linewatch.pipeline.decide.verdict import (
    ModelLabels,
    decide,
    model_labels,
    view_defect_score,
)
from linewatch.pipeline.errors import ConfigError
from linewatch.pipeline.storage.parts import parse_topk
from linewatch.schemas.decisions import PartOutcome, ViewResult

TILE = ModelLabels(
    version="v1",
    labels=("blowhole", "break", "crack", "fray", "free", "uneven"),
    normal_labels=("free",),
    defect_threshold=0.5,
)


def view(index: int, *topk: tuple[str, float], status: str = "ok") -> ViewResult:
    return ViewResult(index, 100 + index, index / 10, status, "v1", tuple(topk))


def test_the_shipped_model_folder_gives_labels_and_threshold() -> None:
    labels = model_labels(DEFAULT_MODEL_DIR)
    assert labels.normal_labels == ("free",) and "crack" in labels.labels
    assert 0 < labels.defect_threshold < 1 and not labels.detector


def test_view_defect_score_is_one_minus_normal_probability() -> None:
    assert view_defect_score(view(0, ("free", 0.7), ("crack", 0.3)), TILE) == pytest.approx(0.3)
    # top-5 of 6 labels leaving out "free": its probability is what the top-5 leaves
    five = view(
        0, ("crack", 0.4), ("break", 0.2), ("fray", 0.1), ("uneven", 0.1), ("blowhole", 0.1)
    )
    assert view_defect_score(five, TILE) == pytest.approx(0.9)


def test_one_bad_view_alone_is_not_enough_two_are() -> None:
    good, bad = ("free", 0.9), ("crack", 0.8)
    settings = VerdictSettings()
    one = decide([view(0, good), view(1, bad, ("free", 0.2)), view(2, good)], TILE, settings)
    assert one.verdict == "ok" and one.score == pytest.approx(0.45)
    two = [view(0, good), view(1, bad, ("free", 0.2)), view(2, bad, ("free", 0.2))]
    assert decide(two, TILE, settings).verdict == "defect"


def test_verdict_rule_thresholds_and_class() -> None:
    settings = VerdictSettings()
    ok = decide(
        [view(0, ("free", 0.9), ("crack", 0.1)), view(1, ("crack", 0.8), ("free", 0.2))],
        TILE,
        settings,
    )
    assert (ok.verdict, ok.label) == ("ok", "free") and ok.score == pytest.approx(0.45)
    assert ok.best is not None and ok.best.view_index == 1  # the most defective view
    bad = decide(
        [
            view(0, ("crack", 0.5), ("break", 0.3), ("free", 0.2)),
            view(1, ("break", 0.45), ("crack", 0.4), ("free", 0.15)),
            view(2, ("free", 0.9), ("break", 0.1)),
        ],
        TILE,
        settings,
    )
    # top-2 defect scores 0.85 and 0.8; class by summed probability: crack 0.9, break 0.85
    assert (bad.verdict, bad.label) == ("defect", "crack")
    assert bad.score == pytest.approx(0.825) and bad.views_inferred == 3
    assert bad.class_scores["crack"] == pytest.approx(0.3)
    lower = VerdictSettings(defect_threshold=0.4)
    assert decide(ok_views(), TILE, lower).verdict == "defect"
    assert decide(ok_views(), TILE, VerdictSettings(top_views=1)).verdict == "defect"


def ok_views() -> list[ViewResult]:
    return [view(0, ("free", 0.9), ("crack", 0.1)), view(1, ("crack", 0.8), ("free", 0.2))]


def test_no_inferred_view_is_uninspected_and_rejects_by_default() -> None:
    stale = [view(0, status="stale"), view(1, status="undecodable")]
    verdict = decide(stale, TILE, VerdictSettings())
    assert (verdict.verdict, verdict.views_inferred, verdict.best) == ("uninspected", 2, None)
    assert verdict.model_version == "v1"
    assert is_ng(verdict.verdict, False, VerdictSettings().rejects_uninspected)
    assert not is_ng(
        verdict.verdict, False, VerdictSettings(on_uninspected="accept").rejects_uninspected
    )
    assert decide([], TILE, VerdictSettings()).verdict == "uninspected"
    # stale views are counted but never scored
    mixed = decide([*stale, view(2, ("free", 0.95), ("crack", 0.05))], TILE, VerdictSettings())
    assert (mixed.verdict, mixed.views_inferred) == ("ok", 3)


def test_detector_views_score_by_their_best_defect_box() -> None:
    detector = ModelLabels("d1", ("ok", "scratch"), ("ok",), 0.5, detector=True)
    verdict = decide([view(0, ("scratch", 0.7)), view(1, ("ok", 0.9))], detector, VerdictSettings())
    assert verdict.verdict == "ok" and verdict.score == pytest.approx(0.35)
    assert decide([view(0, ("scratch", 0.7))], detector, VerdictSettings()).label == "scratch"


def test_stored_topk_text_parses() -> None:
    assert parse_topk("crack:0.7000,free:0.2500") == (("crack", 0.7), ("free", 0.25))
    assert parse_topk("") == ()


def test_verdict_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="verdict.deadline_ms"):
        load_settings(environ={"LINEWATCH_VERDICT__DEADLINE_MS": "0"})
    with pytest.raises(ConfigError, match="unknown key 'verdict.rule'"):
        load_settings(environ={}, overrides={"verdict": {"rule": "vote"}})
    with pytest.raises(ConfigError, match="close_rate"):
        load_settings(
            environ={}, overrides={"verdict": {"line_alarm": {"open_rate": 0.2, "close_rate": 0.3}}}
        )


def outcome(part_id: int, ng: bool) -> PartOutcome:
    return PartOutcome("cam", part_id, part_id * 10, part_id * 10 + 4, part_id, ng)


def test_line_alarm_opens_on_rate_and_closes_with_hysteresis() -> None:
    alarm = LineAlarm(LineAlarmSettings(n=4, open_rate=0.5, close_rate=0.25, run=0))
    pattern = [True, False, False, True, True, False, True, False, False, False, False]
    events = [(i, alarm.feed(outcome(i, ng))) for i, ng in enumerate(pattern)]
    changes = [(i, e.state) for i, e in events if e is not None]
    # window full at part 3 with 2/4 NG: opens; 1/4 at part 8 is not above 0.25: closes
    assert changes == [(3, "open"), (8, "closed")]


def test_line_alarm_opens_on_a_run_and_resumes() -> None:
    settings = LineAlarmSettings(n=10, open_rate=0.9, close_rate=0.1, run=3)
    alarm = LineAlarm(settings)
    assert [alarm.feed(outcome(i, True)) is None for i in range(3)] == [True, True, False]
    restarted = LineAlarm(settings)
    opened = alarm._cameras["cam"].event  # noqa: SLF001
    assert opened is not None and opened.opened_seq == 20
    restarted.resume([outcome(i, True) for i in range(3)], [opened])
    closes = [restarted.feed(outcome(i, False)) for i in range(3, 20)]
    closed = [event for event in closes if event is not None]
    assert len(closed) == 1 and closed[0].state == "closed" and closed[0].opened_seq == 20
