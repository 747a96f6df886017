"""Hot-swapping the inference model of a running worker: real predictor, real Redis."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from linewatch.pipeline.config import DEFAULT_MODEL_DIR
from linewatch.pipeline.inference import switching as active_model
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.runtime import StopFlag
from linewatch.pipeline.streams import broker
from linewatch.schemas.messages import ResultMessage
from linewatch.workers import inference
from tests.support.builders import frame, make_settings
from tests.support.services import add_entries, copy_with_version, linewatch, wait_for

FRAMES = 120


def load(folder: Path) -> Classifier:
    model = Classifier(folder, threads=1, max_batch=8)
    model.warm_up()
    return model


@pytest.fixture()
def worker(redis_client, redis_url, line_name, tmp_path):  # type: ignore[no-untyped-def]
    """An inference worker thread following `model use`; yields (settings, results)."""
    settings = make_settings(
        tmp_path, line_name, redis_url, inference={"model_dir": str(DEFAULT_MODEL_DIR)}
    )
    stop = StopFlag()
    thread = threading.Thread(
        target=inference.run,
        args=(redis_client, load(DEFAULT_MODEL_DIR), settings, "w1", stop, load),
    )
    thread.start()

    def results() -> list[ResultMessage]:
        entries = redis_client.xrange(settings.results_stream)
        return [ResultMessage.decode(fields) for _, fields in entries]

    yield settings, results
    stop.set()
    thread.join(30)


def feed(client: broker.Client, settings, first: int, count: int) -> None:  # type: ignore[no-untyped-def]
    for seq in range(first, first + count):
        add_entries(client, settings.frames_stream, [frame(seq)])
        time.sleep(0.02)


def test_a_model_switch_drops_no_frame_and_each_row_names_its_model(
    worker, redis_client, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    settings, results = worker
    shipped = Classifier(DEFAULT_MODEL_DIR).info.version
    new_model = copy_with_version(tmp_path, "swap-test-2")
    feed(redis_client, settings, 1, FRAMES // 2)
    active_model.use_model(redis_client, settings, new_model)
    fed = FRAMES // 2

    def switched() -> bool:  # frames keep coming while the new model loads and warms
        nonlocal fed
        fed += 1
        feed(redis_client, settings, fed, 1)
        return any(r.model_version == "swap-test-2" for r in results())

    wait_for(switched, 90)
    feed(redis_client, settings, fed + 1, 10)
    fed += 10
    wait_for(lambda: len(results()) == fed, 60)

    rows = results()
    assert sorted(r.seq for r in rows) == list(range(1, fed + 1)), "no frame lost or doubled"
    versions = [r.model_version for r in sorted(rows, key=lambda r: r.seq)]
    switch = versions.index("swap-test-2")
    assert versions[:switch] == [shipped] * switch and switch > 0
    assert versions[switch:] == ["swap-test-2"] * (len(versions) - switch), "one clean switch"
    assert all(r.status == "ok" for r in rows)
    heartbeat = redis_client.hgetall(settings.worker_key("w1"))
    assert heartbeat[b"model"] == b"swap-test-2"


def test_a_broken_model_folder_keeps_the_running_model(
    worker, redis_client, tmp_path, caplog
) -> None:  # type: ignore[no-untyped-def]
    settings, results = worker
    shipped = Classifier(DEFAULT_MODEL_DIR).info.version
    broken = copy_with_version(tmp_path, "broken")
    (broken / "inference.pdiparams").unlink()
    active_model.use_model(redis_client, settings, broken)
    wait_for(lambda: "not loaded" in caplog.text, 30)
    assert "inference.pdiparams" in caplog.text
    feed(redis_client, settings, 1, 20)
    wait_for(lambda: len(results()) == 20, 60)
    assert {r.model_version for r in results()} == {shipped}


def test_model_use_refuses_a_broken_folder_and_show_reports_workers(
    redis_client, redis_url, line_name, tmp_path
) -> None:  # type: ignore[no-untyped-def]

    env = {"LINEWATCH_REDIS_URL": redis_url, "LINEWATCH_LINE": line_name}
    broken = copy_with_version(tmp_path, "broken")
    (broken / "inference.yml").unlink()
    refused = linewatch("model", "use", str(broken), env=env)
    assert refused.returncode == 2 and "missing inference.yml" in refused.stderr
    good = copy_with_version(tmp_path, "v-next")
    used = linewatch("model", "use", str(good), env=env)
    assert used.returncode == 0 and "v-next" in used.stdout, used.stderr
    redis_client.hset(f"lw:worker:{line_name}:infer-a", mapping={"role": "infer", "model": "v1"})
    shown = linewatch("model", "show", env=env)
    assert f"requested: {good.resolve()}" in shown.stdout and "infer-a: v1" in shown.stdout
    redis_client.delete(f"lw:worker:{line_name}:infer-a", f"lw:model:{line_name}")
