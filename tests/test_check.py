"""`linewatch check` against real services: every finding listed, no secret, nothing changed."""

from pathlib import Path

from linewatch.pipeline.streams.embedded_redis import free_port
from linewatch.workers.ingest import model_view
from tests.support.mosquitto import Mosquitto
from tests.support.receivers import webhook_receiver
from tests.support.services import linewatch

MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "linewatch-tile"


def write_config(tmp_path: Path, **values: str) -> Path:
    path = tmp_path / "line.yaml"
    path.write_text(
        f"redis_url: '{values['redis_url']}'\ndata_dir: {tmp_path}\n"
        f"database_url: '{values['database_url']}'\n"
        f"cameras:\n  - id: cam1\n    url: '{values['camera']}'\n"
        "    parts: {method: contrast}\n"
        f"outputs:\n  mqtt:\n    url: '{values['mqtt_url']}'\n"
        f"  webhook:\n    url: '{values['webhook_url']}'\n"
        "ingest:\n  open_timeout_s: 2\n"
    )
    return path


def test_a_ready_line_passes_every_check(tmp_path, redis_url, pg_url, video) -> None:  # type: ignore[no-untyped-def]
    with Mosquitto(tmp_path / "mqtt", users={"gate": "s3cret-mq"}) as broker:
        with webhook_receiver() as (webhook_url, _):
            path = write_config(
                tmp_path,
                redis_url=redis_url,
                database_url=pg_url,
                camera=str(video),
                mqtt_url=broker.url_for("gate", "s3cret-mq"),
                webhook_url=webhook_url,
            )
            run = linewatch("check", "--config", str(path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "7 of 7 checks passed" in run.stdout  # the shipped model has a gallery: its own check
    width, height = model_view(MODEL_DIR, "cam1").size
    assert f"part views {width}x{height}" in run.stdout
    assert "s3cret-mq" not in run.stdout + run.stderr


def test_every_problem_is_listed_without_secrets(tmp_path, video) -> None:  # type: ignore[no-untyped-def]
    with Mosquitto(tmp_path / "mqtt", users={"gate": "right-pw"}) as broker:
        path = write_config(
            tmp_path,
            redis_url=f"redis://:redis-pw@127.0.0.1:{free_port()}/0",
            database_url=f"postgresql+psycopg://u:db-pw@127.0.0.1:{free_port()}/db",
            camera=f"rtsp://op:cam-pw@127.0.0.1:{free_port()}/cam1",
            mqtt_url=broker.url_for("gate", "wrong-pw"),
            webhook_url=f"http://127.0.0.1:{free_port()}/hook",
        )
        run = linewatch("check", "--config", str(path))
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "2 of 7 checks passed; failed: database, redis, camera cam1, mqtt, webhook" in out
    assert "refused the connection" in out and "u:***@127.0.0.1" in out
    for secret in ("redis-pw", "db-pw", "cam-pw", "wrong-pw"):
        assert secret not in out
    assert "Traceback" not in out


def test_check_creates_no_database(tmp_path, redis_url, video) -> None:  # type: ignore[no-untyped-def]
    database = tmp_path / "new.db"
    path = tmp_path / "line.yaml"
    path.write_text(
        f"redis_url: '{redis_url}'\ndata_dir: {tmp_path}\ndatabase_url: 'sqlite:///{database}'\n"
        f"cameras:\n  - id: cam1\n    url: '{video}'\n"
    )
    run = linewatch("check", "--config", str(path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "does not exist yet" in run.stdout
    assert not database.exists()
