"""A whole parts-mode line (ingest + Paddle + sink processes) sends every part's verdict
to a real Mosquitto broker: one message per part row, OK parts too, in part order."""

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from linewatch.line import run_line
from linewatch.pipeline.config import load_settings
from linewatch.pipeline.simulation.moving_line import MovingLineSpec, simulate_moving
from linewatch.pipeline.storage.database import open_database
from linewatch.schemas.tables import Part
from tests.mqtt_broker import Mosquitto, Subscriber


def test_every_part_verdict_reaches_the_broker_once(tmp_path: Path) -> None:
    ((video, _, _),) = simulate_moving(tmp_path / "line", MovingLineSpec(parts=6, seed=3))
    with Mosquitto(tmp_path / "broker") as broker:
        subscriber = Subscriber(broker, "lw-test")
        settings = load_settings(
            overrides={
                "line": "mqtt-line",
                "data_dir": str(tmp_path / "data"),
                "cameras": [
                    {
                        "id": "cam",
                        "url": str(video),
                        "live": False,
                        "parts": {"method": "contrast", "merge_gap": 64},
                    }
                ],
                "outputs": {"mqtt_url": broker.url, "mqtt_topic": "lw-test"},
            }
        )
        run_line(settings, False, lambda _stats: None)
        engine = open_database(settings.resolved_database_url())
        with Session(engine) as session:
            rows = session.execute(select(Part.part_id, Part.verdict).order_by(Part.part_id)).all()
        engine.dispose()
        assert len(rows) == 6
        verdicts = subscriber.wait_for("cam/verdict", len(rows))
        assert [(v["part_id"], v["verdict"]) for v in verdicts] == [tuple(r) for r in rows]
