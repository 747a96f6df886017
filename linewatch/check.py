"""`linewatch check`: every service and input the line needs, tried once, each judged.

Unlike `linewatch run` (which stops at the first problem, or starts without a dead live
camera), this tries everything and lists what is wrong, so commissioning fixes it all in
one pass. It changes nothing: it migrates no database and publishes nothing.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from linewatch.pipeline.config import CameraSettings, Settings
from linewatch.pipeline.errors import LinewatchError, one_line
from linewatch.pipeline.gallery.folder import load_reviews, load_searched
from linewatch.pipeline.inference.gallery import gallery_settings_of
from linewatch.pipeline.inference.loading import describe_model
from linewatch.pipeline.redact import redact_url
from linewatch.pipeline.storage import migrate
from linewatch.pipeline.storage.database import create_database_engine, unreachable

TIMEOUT_S = 5.0


@dataclass(frozen=True)
class CheckResult:
    name: str
    ok: bool
    detail: str


def run_checks(settings: Settings) -> list[CheckResult]:
    """Each check's outcome, in the order the line needs them."""
    checks: list[tuple[str, Callable[[], str]]] = [
        ("model", lambda: _model(settings)),
        *([("gallery", lambda: _gallery(settings))] if _has_gallery(settings) else []),
        ("database", lambda: _database(settings)),
        ("redis", lambda: _redis(settings)),
    ]
    checks += [(f"camera {c.id}", _camera_check(settings, c)) for c in settings.cameras]
    if not settings.cameras:
        checks.append(("cameras", _no_cameras))
    if settings.outputs.mqtt.url:
        checks.append(("mqtt", lambda: _mqtt(settings)))
    if settings.outputs.webhook.url:
        checks.append(("webhook", lambda: _webhook(settings.outputs.webhook.url or "")))
    return [_judge(name, check) for name, check in checks]


def _judge(name: str, check: Callable[[], str]) -> CheckResult:
    try:
        return CheckResult(name, True, check())
    except Exception as exc:  # every failure is a finding, reported with the others
        return CheckResult(name, False, one_line(exc))


def _model(settings: Settings) -> str:
    from linewatch.workers import ingest

    info = describe_model(settings.inference.model_dir)
    detail = f"{info.name} {info.version}, threshold {info.defect_threshold:g}"
    if settings.cameras:
        view = ingest.model_view(settings.inference.model_dir, settings.cameras[0].id)
        detail += f", part views {view.size[0]}x{view.size[1]}"
    return detail


def _has_gallery(settings: Settings) -> bool:
    try:
        return gallery_settings_of(describe_model(settings.inference.model_dir)) is not None
    except LinewatchError:  # the model check reports it
        return False


def _gallery(settings: Settings) -> str:
    """The model's gallery files load, with their entries (trained + reviewed)."""
    folder = settings.inference.model_dir
    section = gallery_settings_of(describe_model(folder))
    assert section is not None
    searched = load_searched(folder, section)
    reviewed = load_reviews(folder, section.embedding_size)
    return (
        f"{len(searched) - len(reviewed)} trained + {len(reviewed)} reviewed entries, "
        f"{len(searched.counts())} classes, novelty threshold {section.novelty_threshold:g}"
    )


def _database(settings: Settings) -> str:
    url = settings.resolved_database_url()
    file = make_url(url).database if url.startswith("sqlite") else None
    if file and file != ":memory:" and not Path(file).exists():
        return f"{redact_url(url)} does not exist yet: the line creates it on start"
    engine = create_database_engine(url)
    try:
        current, head = migrate.current_revision(engine), migrate.head_revision()
    except OperationalError as exc:
        raise unreachable(url, exc) from None
    finally:
        engine.dispose()
    where = redact_url(url)
    if current == head:
        return f"{where}, schema {current}"
    if current is None:
        return f"{where}, empty: the line creates schema {head} on start"
    raise migrate.SchemaOutOfDate(
        f"{where} has schema {current}, this linewatch needs {head}; back it up, then run "
        "`linewatch db upgrade`"
    )


def _redis(settings: Settings) -> str:
    from linewatch.pipeline.streams import broker
    from linewatch.pipeline.streams.embedded_redis import find_redis_server

    if not settings.has_redis:
        return f"none configured: `linewatch run` starts {find_redis_server()}"
    broker.connect_to(settings, "`linewatch check`").ping()
    return broker.describe(settings)


def _camera_check(settings: Settings, camera: CameraSettings) -> Callable[[], str]:
    def check() -> str:
        from linewatch.line import probe_camera

        probe_camera(camera, settings)
        return f"{redact_url(camera.url)}: a frame decoded, parts {camera.parts.method}"

    return check


def _no_cameras() -> str:
    raise ValueError("no cameras configured; add at least one under `cameras:`")


def _mqtt(settings: Settings) -> str:
    from linewatch.pipeline.outputs.mqtt import MqttConfig, probe_broker

    config = MqttConfig.from_url(
        settings.outputs.mqtt.url or "", settings.mqtt_topic, ca_file=settings.outputs.mqtt.ca_file
    )
    probe_broker(config, timeout_s=TIMEOUT_S)
    return f"{config.safe_url}: connected, topics {config.topic}/#"


def _webhook(url: str) -> str:
    """Reachability only (a TCP connection): a test request would reach the real receiver."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"outputs.webhook.url {redact_url(url)}: expected http(s)://host/path")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=TIMEOUT_S).close()
    except OSError as exc:
        raise ConnectionError(
            f"outputs.webhook.url {redact_url(url)}: cannot connect to {parts.hostname}:{port} "
            f"({exc.strerror or exc}); deliveries wait in RQ and retry until it answers"
        ) from None
    return f"{redact_url(url)}: {parts.hostname}:{port} accepts connections"
