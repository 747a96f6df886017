"""Shared fixtures: a real Redis and a real PostgreSQL, each test isolated by name."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from linewatch.pipeline.errors import ServiceUnavailable
from linewatch.pipeline.streams import broker
from linewatch.pipeline.streams.embedded_redis import EmbeddedRedis
from tests.line_model import BackgroundTraining

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """REDIS_URL (default local 6379); a private redis-server when none answers."""
    url = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL)
    try:
        broker.connect(url).close()
        yield url
    except ServiceUnavailable:
        with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
            yield server.url


@pytest.fixture()
def redis_client(redis_url: str) -> Iterator[broker.Client]:
    client = broker.connect(redis_url)
    yield client
    client.close()


@pytest.fixture()
def line_name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema per test, reached through search_path in the URL."""
    base = os.environ.get("TEST_DATABASE_URL", DEFAULT_PG_URL)
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield f"{base}?options=-csearch_path%3D{schema}"
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture()
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'linewatch.db'}"


pytest_plugins = ["tests.conftest_rtsp"]


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test on a SQLite file and on a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'linewatch.db'}"
    else:
        yield request.getfixturevalue("pg_url")


LINE_MODEL = pytest.StashKey[BackgroundTraining]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """When any collected test needs `line_model`, start training it now and run those
    tests last, so the training overlaps the others (see tests/line_model.py)."""
    needs = [item for item in items if "line_model" in getattr(item, "fixturenames", ())]
    if not needs or config.option.collectonly:
        return
    waiting = set(needs)
    items[:] = [item for item in items if item not in waiting] + needs
    config.stash[LINE_MODEL] = BackgroundTraining(
        Path(tempfile.mkdtemp(prefix="linewatch-line-model-"))
    )


def pytest_unconfigure(config: pytest.Config) -> None:
    training = config.stash.get(LINE_MODEL, None)
    if training is not None:
        training.stop()
        shutil.rmtree(training.root, ignore_errors=True)


@pytest.fixture(scope="session")
def line_model(request: pytest.FixtureRequest) -> Path:
    """The synthetic line model (tests/line_model.py), once its training has finished."""
    return request.config.stash[LINE_MODEL].result()


@pytest.fixture(scope="session")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short demo-line video (12 frames at 10 fps); modules with their own `video` win."""
    from linewatch.demo import write_demo_video

    path = tmp_path_factory.mktemp("video") / "ok.mp4"
    write_demo_video(path, 12, fps=10)
    return path
