"""Bad input through the real CLI: one clear line on stderr, exit code 2, no traceback."""

import shutil
from pathlib import Path

import yaml

from linewatch.pipeline.inference.predictor import int8_kernels
from linewatch.pipeline.streams.embedded_redis import free_port
from tests.support.services import assert_clean_error, linewatch

MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "linewatch-tile"


def config(tmp_path: Path, redis_url: str, camera_url: str, extra: str = "") -> Path:
    path = tmp_path / "line.yaml"
    path.write_text(
        f"redis_url: {redis_url}\ndata_dir: {tmp_path}\n"
        f"cameras:\n  - id: cam1\n    url: '{camera_url}'\n{extra}"
    )
    return path


def test_unknown_config_key(tmp_path, redis_url, video) -> None:  # type: ignore[no-untyped-def]
    path = config(tmp_path, redis_url, str(video), "inference:\n  max_bach: 4\n")
    assert_clean_error(linewatch("run", "--config", str(path)), "inference.max_bach", str(path))


def test_wrong_type(tmp_path, redis_url, video) -> None:  # type: ignore[no-untyped-def]
    path = config(tmp_path, redis_url, str(video), "inference:\n  max_batch: many\n")
    assert_clean_error(linewatch("run", "--config", str(path)), "inference.max_batch")


def test_missing_video_file(tmp_path, redis_url) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "nope.mp4"
    run = linewatch("run", "--config", str(config(tmp_path, redis_url, str(missing))))
    assert_clean_error(run, "cam1", str(missing))


def test_file_that_is_not_video(tmp_path, redis_url) -> None:  # type: ignore[no-untyped-def]
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("this is not a video\n" * 100)
    run = linewatch("run", "--config", str(config(tmp_path, redis_url, str(bogus))))
    assert_clean_error(run, "cam1", str(bogus))


def test_unreachable_rtsp_camera_is_named_without_password(tmp_path, redis_url) -> None:  # type: ignore[no-untyped-def]
    url = f"rtsp://op:hunter2@127.0.0.1:{free_port()}/cam1"
    path = config(tmp_path, redis_url, url, "ingest:\n  open_timeout_s: 2\n")
    run = linewatch("run", "--strict", "--config", str(path))  # commissioning: fail fast
    assert_clean_error(run, "cam1", "rtsp://op:***@127.0.0.1")
    assert "hunter2" not in run.stderr + run.stdout


def test_redis_unreachable(tmp_path, video) -> None:  # type: ignore[no-untyped-def]
    path = config(tmp_path, f"redis://:pw@127.0.0.1:{free_port()}/0", str(video))
    run = linewatch("run", "--config", str(path))
    assert_clean_error(run, "cannot reach Redis", "redis://:***@127.0.0.1")


def test_bad_database_url(tmp_path, redis_url, video) -> None:  # type: ignore[no-untyped-def]
    path = config(tmp_path, redis_url, str(video))
    run = linewatch("run", "--config", str(path), env={"LINEWATCH_DATABASE_URL": "mongo://x/y"})
    assert_clean_error(run, "bad database URL mongo://x/y")


def test_database_down(tmp_path, redis_url, video) -> None:  # type: ignore[no-untyped-def]
    url = f"postgresql+psycopg://u:pw@127.0.0.1:{free_port()}/db"
    path = config(tmp_path, redis_url, str(video))
    run = linewatch("run", "--config", str(path), env={"LINEWATCH_DATABASE_URL": url})
    assert_clean_error(run, "cannot reach database", "u:***@127.0.0.1")


def test_model_folder_with_missing_files(tmp_path, redis_url, video) -> None:  # type: ignore[no-untyped-def]
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "inference.yml").write_text((MODEL_DIR / "inference.yml").read_text())
    path = config(tmp_path, redis_url, str(video), f"inference:\n  model_dir: {broken}\n")
    run = linewatch("run", "--config", str(path))
    assert_clean_error(run, str(broken), "inference.pdiparams")


def model_copy(tmp_path: Path, **linewatch_keys: object) -> Path:
    """The shipped model's files in a new folder, its inference.yml's Linewatch section
    updated with `linewatch_keys`."""
    folder = tmp_path / "model"
    shutil.copytree(MODEL_DIR, folder)
    config = yaml.safe_load((folder / "inference.yml").read_text())
    config["Linewatch"].update(linewatch_keys)
    (folder / "inference.yml").write_text(yaml.safe_dump(config))
    return folder


def test_int8_model_from_another_kind_of_cpu_is_refused(tmp_path, redis_url, video) -> None:  # type: ignore[no-untyped-def]
    other = "no-vnni" if int8_kernels() == "vnni" else "vnni"
    folder = model_copy(tmp_path, precision="int8", quantization={"int8_kernels": other})
    path = config(tmp_path, redis_url, str(video), f"inference:\n  model_dir: {folder}\n")
    run = linewatch("run", "--config", str(path))
    assert_clean_error(run, str(folder), f"set with '{other}' INT8 kernels", "FP32 folder")
    swap = linewatch("model", "use", str(folder), "--config", str(path))  # nor hot-swapped in
    assert_clean_error(swap, str(folder), f"set with '{other}' INT8 kernels")


def test_run_ends_when_inference_cannot_load_the_model(tmp_path, redis_url, video) -> None:  # type: ignore[no-untyped-def]
    folder = model_copy(tmp_path)
    (folder / "inference.pdiparams").write_bytes(b"not paddle parameters" * 1000)
    path = config(tmp_path, redis_url, str(video), f"inference:\n  model_dir: {folder}\n")
    run = linewatch("run", "--config", str(path))  # it used to wait for results forever
    assert "paddle cannot load" in run.stderr
    assert_clean_error(run, "infer:0 stopped on an error")
    assert "camera cam1: decoded" not in run.stderr, "ingest started with no consumer"


def test_debug_shows_the_traceback(tmp_path, redis_url) -> None:  # type: ignore[no-untyped-def]
    path = config(tmp_path, redis_url, str(tmp_path / "nope.mp4"))
    run = linewatch("--debug", "run", "--config", str(path))
    assert run.returncode != 0 and "Traceback" in run.stderr
