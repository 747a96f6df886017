"""The sink in parts mode on real Redis streams and real databases: one parts row per
part from its stored views, uninspected at the deadline, late verdicts recorded but not
announced again, part ends before their views, one alert per NG part; the MQTT cursor
moves only on the broker's acknowledgement and pub/sub never repeats an announcement."""

from __future__ import annotations

import json
import time

import pytest
import yaml
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from linewatch.pipeline.config import MqttSettings
from linewatch.pipeline.decide.verdict import model_labels
from linewatch.pipeline.inference.switching import use_model
from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.streams import broker
from linewatch.schemas.tables import Alert, Detection, OutboxCursor, Part, PartEnd
from linewatch.workers import sink
from tests.support.builders import make_settings, part_end, view_result
from tests.support.mosquitto import Mosquitto, Subscriber
from tests.support.receivers import ChannelListener
from tests.support.services import add_entries, copy_with_version, run_sink_until

FREE = (("free", 0.9), ("crack", 0.06), ("break", 0.04))
CRACK = (("crack", 0.8), ("break", 0.15), ("free", 0.05))


def settings_for(tmp_path, line_name, redis_url, url, **verdict):  # type: ignore[no-untyped-def]
    return make_settings(
        tmp_path,
        line_name,
        redis_url,
        database_url=url,
        verdict={
            "defect_threshold": 0.5,
            "deadline_ms": 60_000,  # a busy CI
            "line_alarm": {"n": 10, "open_rate": 0.5, "close_rate": 0.2, "run": 3},
            **verdict,
        },
        outputs={
            "pubsub": {
                "alerts_channel": f"{line_name}:alerts",
                "verdicts_channel": f"{line_name}:verdicts",
            }
        },
    )


def add(client, settings, *messages) -> None:  # type: ignore[no-untyped-def]
    broker.ensure_group(client, settings.results_stream, sink.GROUP)
    add_entries(client, settings.results_stream, [m.encode() for m in messages])


def parts(engine) -> list[Part]:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        rows = session.scalars(select(Part).order_by(Part.part_id)).all()
        for row in rows:
            _ = row.evidence  # load the deferred crop while the session is open
        return list(rows)


def alerts(engine) -> list[tuple[str, int | None, str, str]]:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        query = select(Alert.kind, Alert.part_id, Alert.label, Alert.state).order_by(Alert.id)
        return [tuple(row) for row in session.execute(query).all()]  # type: ignore[misc]


def count(engine, table) -> int:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_one_row_per_part_from_its_views_with_part_end_before_views(
    database_url, tmp_path, redis_client, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, line_name, redis_url, database_url)
    engine = storage.open_database(database_url)
    listener = ChannelListener(redis_client, f"{line_name}:alerts", f"{line_name}:verdicts")
    crop = b"\xff\xd8crop-jpeg"
    add(
        redis_client,
        settings,
        view_result(1, 0, 1, FREE),
        view_result(1, 1, 2, FREE),
        part_end(1, 2, 1, 2),
        part_end(2, 3, 3, 5),  # before its views: decided once all three are stored
        view_result(2, 0, 3, FREE),
        view_result(2, 1, 4, CRACK, evidence=crop),
        view_result(2, 2, 5, CRACK, evidence=crop + b"2"),
    )
    run_sink_until(redis_client, engine, settings, "sink-a", lambda: count(engine, Part) == 2)
    listener.close()
    ok, bad = parts(engine)
    assert (ok.verdict, ok.label, ok.views_sent, ok.views_inferred) == ("ok", "free", 2, 2)
    assert (bad.verdict, bad.label, bad.views_inferred, bad.late) == ("defect", "crack", 3, False)
    assert bad.score == pytest.approx(0.95) and bad.evidence == crop  # the first best view
    assert (bad.best_pts, bad.x1, bad.y1, bad.x2, bad.y2) == (0.4, 10, 20, 110, 140)
    assert (bad.first_seq, bad.last_seq, bad.end_reason) == (3, 5, "left")
    assert json.loads(bad.class_scores)["crack"] > json.loads(bad.class_scores)["free"]
    assert alerts(engine) == [("part", 2, "crack", "raised")]
    verdicts = listener.messages[f"{line_name}:verdicts"]
    assert [(v["part_id"], v["verdict"]) for v in verdicts] == [(1, "ok"), (2, "defect")]
    assert [a["part_id"] for a in listener.messages[f"{line_name}:alerts"]] == [2]
    with Session(engine) as session:
        assert session.scalar(select(func.count()).where(Detection.evidence.is_not(None))) == 0
        assert session.scalars(select(Detection.part_id).order_by(Detection.seq)).all() == [
            1,
            1,
            2,
            2,
            2,
        ]
    assert count(engine, PartEnd) == 0
    engine.dispose()


def test_uninspected_at_deadline_then_late_verdict_is_recorded_not_announced(
    database_url, tmp_path, redis_client, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, line_name, redis_url, database_url, deadline_ms=300)
    engine = storage.open_database(database_url)
    listener = ChannelListener(redis_client, f"{line_name}:alerts", f"{line_name}:verdicts")
    add(redis_client, settings, view_result(7, 0, 70, FREE), part_end(7, 2, 70, 71))
    run_sink_until(redis_client, engine, settings, "sink-a", lambda: count(engine, Part) == 1)
    [row] = parts(engine)
    assert (row.verdict, row.late, row.views_inferred) == ("uninspected", False, 1)
    assert row.decided_ts >= row.deadline_ts
    add(redis_client, settings, view_result(7, 1, 71, FREE))  # the missing view, late
    run_sink_until(redis_client, engine, settings, "sink-a", lambda: parts(engine)[0].late)
    listener.close()
    [row] = parts(engine)
    assert (row.verdict, row.label, row.late, row.views_inferred) == ("ok", "free", True, 2)
    assert alerts(engine) == [("part", 7, "uninspected", "raised")]  # rejected at the deadline
    verdicts = listener.messages[f"{line_name}:verdicts"]
    assert [(v["part_id"], v["verdict"]) for v in verdicts] == [(7, "uninspected")]
    assert len(listener.messages[f"{line_name}:alerts"]) == 1
    assert count(engine, PartEnd) == 0
    engine.dispose()


def test_views_after_the_late_window_change_nothing(
    sqlite_url, tmp_path, redis_client, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(
        tmp_path, line_name, redis_url, sqlite_url, deadline_ms=100, late_window_s=0.3
    )
    engine = storage.open_database(sqlite_url)
    add(redis_client, settings, part_end(3, 1, 30, 30, ended_ts=time.time_ns() - 10**9))
    expired = lambda: count(engine, Part) == 1 and count(engine, PartEnd) == 0  # noqa: E731
    run_sink_until(redis_client, engine, settings, "sink-a", expired)
    add(redis_client, settings, view_result(3, 0, 30, CRACK))
    run_sink_until(redis_client, engine, settings, "sink-a", lambda: count(engine, Detection) == 1)
    [row] = parts(engine)
    assert (row.verdict, row.late, row.views_inferred) == ("uninspected", False, 0)
    assert alerts(engine) == [("part", 3, "uninspected", "raised")]
    engine.dispose()


def test_stale_views_count_and_a_part_without_inferred_views_is_uninspected(
    sqlite_url, tmp_path, redis_client, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, line_name, redis_url, sqlite_url, on_uninspected="accept")
    engine = storage.open_database(sqlite_url)
    add(
        redis_client,
        settings,
        view_result(1, 0, 1, (), status="stale"),
        view_result(1, 1, 2, (), status="undecodable"),
        part_end(1, 2, 1, 2),
        part_end(2, 0, 3, 3, reason="stuck"),  # never wholly in view: nothing was sent
    )
    run_sink_until(redis_client, engine, settings, "sink-a", lambda: count(engine, Part) == 2)
    first, second = parts(engine)
    assert (first.verdict, first.views_inferred, first.late) == ("uninspected", 2, False)
    assert (second.verdict, second.end_reason) == ("uninspected", "stuck")
    assert alerts(engine) == []  # on_uninspected: accept
    engine.dispose()


def test_every_ng_part_alerts_without_cooldown_and_the_line_alarm_opens_and_closes(
    database_url, tmp_path, redis_client, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, line_name, redis_url, database_url)
    engine = storage.open_database(database_url)
    pattern = [True] * 4 + [False] * 10
    messages = []
    for part_id, bad in enumerate(pattern, start=1):
        seq = part_id * 10
        messages += [
            view_result(part_id, 0, seq, CRACK if bad else FREE),
            part_end(part_id, 1, seq, seq),
        ]
    add(redis_client, settings, *messages)
    run_sink_until(
        redis_client, engine, settings, "sink-a", lambda: count(engine, Part) == len(pattern)
    )
    found = alerts(engine)
    assert [a for a in found if a[0] == "part"] == [
        ("part", part_id, "crack", "raised") for part_id in (1, 2, 3, 4)
    ]
    # 3 NG in a row opens; the rate over the last 10 falls to 2/10 at part 12: closes
    assert [a for a in found if a[0] == "line"] == [("line", None, "ng-rate", "closed")]
    with Session(engine) as session:
        line = session.scalars(select(Alert).where(Alert.kind == "line")).one()
    assert (line.opened_seq, line.closed_seq) == (30, 120)
    engine.dispose()


def test_replayed_entries_and_a_restarted_sink_write_no_part_twice(
    database_url, tmp_path, redis_client, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, line_name, redis_url, database_url)
    engine = storage.open_database(database_url)
    batch = [view_result(1, 0, 1, CRACK), view_result(1, 1, 2, CRACK), part_end(1, 2, 1, 2)]
    add(redis_client, settings, part_end(2, 1, 3, 3), *batch)
    # a first sink stores everything, then dies before XACK and before deciding
    delivered = broker.read_group(
        redis_client, settings.results_stream, sink.GROUP, "sink-a", 10, None
    )
    assert len(delivered) == 4
    storage.write_batch(engine, batch[:2], 1, [batch[2], part_end(2, 1, 3, 3)], 10**9)
    assert count(engine, PartEnd) == 2
    run_sink_until(redis_client, engine, settings, "sink-a", lambda: count(engine, Part) == 1)
    add(redis_client, settings, *batch, view_result(2, 0, 3, FREE))  # replays, part 2's view
    run_sink_until(redis_client, engine, settings, "sink-b", lambda: count(engine, Part) == 2)
    time.sleep(0.3)
    assert [(p.part_id, p.verdict) for p in parts(engine)] == [(1, "defect"), (2, "ok")]
    assert alerts(engine) == [("part", 1, "crack", "raised")]
    assert count(engine, Detection) == 3 and count(engine, PartEnd) == 0
    engine.dispose()


@pytest.fixture(scope="module")
def classifier():  # type: ignore[no-untyped-def]
    from linewatch.pipeline.config import DEFAULT_MODEL_DIR
    from linewatch.pipeline.inference.classifier import Classifier

    model = Classifier(DEFAULT_MODEL_DIR, threads=2, max_batch=8)
    model.warm_up()
    return model


def view_frame(part_id: int, index: int, seq: int, image, age_s: float = 0.0):  # type: ignore[no-untyped-def]
    from linewatch.pipeline.video.codec import encode_image
    from linewatch.schemas.messages import FrameMessage, PartView

    now = time.time_ns()
    height, width = image.shape[:2]
    view = PartView(part_id, index, 100 + index * 40, 50, 324 + index * 40, 274)
    return FrameMessage(
        "cam",
        seq,
        seq / 10,
        now - int(age_s * 1e9),
        now,
        width,
        height,
        "jpeg",
        encode_image(image, "jpeg"),
        age_s > 0,
        view,
    )


def test_views_inferred_by_the_shipped_model_give_the_rule_verdict(
    classifier, database_url, tmp_path, redis_client, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from linewatch.pipeline.simulation.synthetic import make_tile
    from linewatch.workers.inference import GROUP, FrameBatchHandler

    settings = make_settings(
        tmp_path, line_name, redis_url, database_url=database_url, inference={"freshness_s": 1.0}
    )
    rng = np.random.default_rng(5)
    tiles = {
        label: np.repeat(make_tile(rng, label, 224)[..., None], 3, axis=2)
        for label in ("free", "crack")
    }
    frames = [view_frame(1, i, 1 + i, tiles["free"]) for i in range(3)]
    frames += [view_frame(2, i, 4 + i, tiles["crack"]) for i in range(3)]
    frames.append(view_frame(2, 3, 7, tiles["crack"], age_s=10.0))  # stale: counted, not scored
    broker.ensure_group(redis_client, settings.frames_stream, GROUP)
    add_entries(redis_client, settings.frames_stream, [f.encode() for f in frames])
    delivered = broker.read_group(redis_client, settings.frames_stream, GROUP, "w1", 10, None)
    FrameBatchHandler(redis_client, classifier, settings, "w1").handle(delivered)
    add(redis_client, settings, part_end(1, 3, 1, 3), part_end(2, 4, 4, 7))
    engine = storage.open_database(database_url)
    run_sink_until(redis_client, engine, settings, "sink-a", lambda: count(engine, Part) == 2)

    info = classifier.info
    for row in parts(engine):
        with Session(engine) as session:
            views = session.execute(
                select(Detection.status, Detection.topk, Detection.is_defect, Detection.view_box)
                .where(Detection.part_id == row.part_id)
                .order_by(Detection.view_index)
            ).all()
        assert row.views_inferred == row.views_sent == len(views)
        assert row.model_version == info.version and not row.late
        scores = sorted(defect_score(v.topk, info.labels) for v in views if v.status == "ok")
        expected = sum(scores[-2:]) / 2
        assert row.score == pytest.approx(expected, abs=1e-3)
        assert row.verdict == ("defect" if expected >= info.defect_threshold else "ok")
        assert (row.evidence is not None) == any(v.is_defect for v in views)
        assert all(json.loads(v.view_box)[1] == 50 for v in views)
    assert [s for s, *_ in views] == ["ok", "ok", "ok", "stale"]
    engine.dispose()


def defect_score(topk: str, labels: tuple[str, ...]) -> float:
    """1 - P(free) from a stored top-k (`free` left out: what the top-k leaves over)."""
    pairs = dict((label, float(p)) for label, p in (item.split(":") for item in topk.split(",")))
    if "free" in pairs:
        return 1 - pairs["free"]
    rest = (1 - sum(pairs.values())) / (len(labels) - len(pairs))
    return 1 - rest


def test_decisions_committed_before_a_kill_are_announced_on_restart(
    database_url, tmp_path, redis_client, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    settings = settings_for(tmp_path, line_name, redis_url, database_url)
    engine = storage.open_database(database_url)
    run_sink_until(redis_client, engine, settings, "sink-a", lambda: True)  # cursors exist
    batch = [view_result(1, 0, 1, CRACK), part_end(1, 1, 1, 1), view_result(2, 0, 2, FREE)]
    storage.write_batch(engine, [batch[0], batch[2]], 1, [batch[1], part_end(2, 1, 2, 2)], 10**9)
    # a sink decides both parts, commits, and is killed before it announces anything
    done = sink.part_judge(engine, settings, redis_client).decide_due(time.time_ns())
    assert len(done.verdicts) == 2 and len(done.alerts) == 1
    listener = ChannelListener(redis_client, f"{line_name}:alerts", f"{line_name}:verdicts")
    run_sink_until(redis_client, engine, settings, "sink-a", lambda: False, timeout_s=1.5)
    run_sink_until(redis_client, engine, settings, "sink-a", lambda: False, timeout_s=1.0)
    listener.close()
    verdicts = listener.messages[f"{line_name}:verdicts"]
    assert [(v["part_id"], v["verdict"]) for v in verdicts] == [(1, "defect"), (2, "ok")]
    assert [(a["kind"], a["part_id"]) for a in listener.messages[f"{line_name}:alerts"]] == [
        ("part", 1)
    ]
    engine.dispose()


def two_views(part_id: int, defective: bool) -> list:  # type: ignore[type-arg]
    topk, seq = (CRACK if defective else FREE), part_id * 10
    views = [view_result(part_id, i, seq + i, topk) for i in (0, 1)]
    return [*views, part_end(part_id, 2, seq, seq + 1)]


def cursors(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return dict(session.execute(select(OutboxCursor.notifier, OutboxCursor.last_id)).all())  # type: ignore[arg-type]


def test_mqtt_cursor_moves_only_on_the_brokers_ack_and_pubsub_never_repeats(
    database_url, tmp_path, redis_client, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    mqtt = Mosquitto(tmp_path / "broker")  # down while the parts are decided
    settings = settings_for(tmp_path, line_name, redis_url, database_url)
    settings = settings.model_copy(
        update={
            "outputs": settings.outputs.model_copy(
                update={"mqtt": MqttSettings(url=mqtt.url, topic=f"lw/{line_name}")}
            )
        }
    )
    engine = storage.open_database(database_url)
    run_sink_until(redis_client, engine, settings, "sink-a", lambda: True)  # cursors exist
    start = cursors(engine)
    listener = ChannelListener(redis_client, f"{line_name}:verdicts")
    add(redis_client, settings, *[m for p in (1, 2, 3) for m in two_views(p, p == 2)])
    run_sink_until(redis_client, engine, settings, "sink-a", lambda: count(engine, Part) == 3)
    moved = cursors(engine)
    assert moved["PubSubNotifier"] > start["PubSubNotifier"]
    assert moved["mqtt"] == start["mqtt"], "nothing acknowledged: the MQTT cursor stays"
    with mqtt:
        subscriber = Subscriber(mqtt, f"lw/{line_name}")
        with Session(engine) as session, session.begin():  # as if killed before its commit
            session.execute(
                update(OutboxCursor)
                .where(OutboxCursor.notifier == "PubSubNotifier")
                .values(last_id=start["PubSubNotifier"])
            )
        run_sink_until(redis_client, engine, settings, "sink-a", lambda: False, timeout_s=1.5)
        verdicts = subscriber.wait_for("/cam/verdict", 3)
        assert cursors(engine)["mqtt"] == moved["PubSubNotifier"], "acknowledged: stored"
        run_sink_until(redis_client, engine, settings, "sink-a", lambda: False, timeout_s=1.0)
        time.sleep(0.3)
        listener.close()
        subscriber.close()
    assert [v["part_id"] for v in subscriber.on("/cam/verdict")] == [1, 2, 3]
    assert [a["part_id"] for a in subscriber.on("/alerts") if a["kind"] == "part"] == [2]
    assert [v["part_id"] for v in verdicts] == [1, 2, 3]
    assert [v["part_id"] for v in listener.messages[f"{line_name}:verdicts"]] == [1, 2, 3]
    engine.dispose()


def test_parts_are_judged_by_the_model_that_inferred_them(
    tmp_path, redis_client, redis_url, line_name, sqlite_url
) -> None:  # type: ignore[no-untyped-def]
    """After `linewatch model use`, views of the new model meet its threshold, not the
    configured one's; views of the configured model keep theirs."""
    settings = settings_for(tmp_path, line_name, redis_url, sqlite_url, defect_threshold=None)
    configured = model_labels(settings.inference.model_dir)
    swapped = copy_with_version(tmp_path, "swapped-v2")
    info = yaml.safe_load((swapped / "inference.yml").read_text())
    info["Linewatch"]["defect_threshold"] = 0.3
    (swapped / "inference.yml").write_text(yaml.safe_dump(info))
    use_model(redis_client, settings, swapped)
    engine = storage.open_database(sqlite_url)
    doubtful = (("free", 0.5), ("crack", 0.3), ("break", 0.2))  # defect score 0.5
    views = [
        view_result(1, 0, 1, doubtful, version="swapped-v2"),
        view_result(2, 0, 2, doubtful, version=configured.version),
    ]
    ends = [part_end(1, 1, 1, 1), part_end(2, 1, 2, 2)]
    storage.write_batch(engine, views, 1, ends, 10**9)
    done = sink.part_judge(engine, settings, redis_client).decide_due(time.time_ns())
    verdicts = {v.part_id: (v.verdict, v.model_version) for v in done.verdicts}
    assert configured.defect_threshold > 0.5
    assert verdicts == {1: ("defect", "swapped-v2"), 2: ("ok", configured.version)}
