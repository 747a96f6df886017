from pathlib import Path

import pytest

from linewatch.pipeline.config import load_settings
from linewatch.pipeline.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "line.yaml"
    path.write_text(text)
    return path


def test_yaml_and_env_overrides(tmp_path: Path) -> None:
    path = write(
        tmp_path, "line: a\ninference:\n  max_batch: 8\ncameras:\n- {id: c1, url: x.mp4}\n"
    )
    env = {"LINEWATCH_INFERENCE__MAX_BATCH": "16", "LINEWATCH_REDIS_URL": "redis://h:1/0"}
    settings = load_settings(path, environ=env)
    assert settings.inference.max_batch == 16
    assert settings.redis_url == "redis://h:1/0"
    assert settings.cameras[0].id == "c1"
    assert settings.frames_stream == "lw:frames:a"


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "inference:\n  max_bach: 8\n")
    with pytest.raises(ConfigError, match=r"unknown key 'inference.max_bach'") as info:
        load_settings(path, environ={})
    assert str(path) in str(info.value)


def test_unknown_env_key_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'sink.bach_size'.*LINEWATCH_"):
        load_settings(environ={"LINEWATCH_SINK__BACH_SIZE": "3"})


def test_wrong_type_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "sink:\n  batch_size: lots\n")
    with pytest.raises(ConfigError, match=r"'sink.batch_size'"):
        load_settings(path, environ={})


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.yaml", environ={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(write(tmp_path, "a: [1,\n"), environ={})


def test_alert_rule_needs_n_at_least_k() -> None:
    with pytest.raises(ConfigError, match="alerts.n"):
        load_settings(environ={}, overrides={"alerts": {"k": 4, "n": 2}})


def test_default_database_is_a_sqlite_file_in_data_dir(tmp_path: Path) -> None:
    settings = load_settings(environ={}, overrides={"data_dir": str(tmp_path)})
    assert settings.resolved_database_url() == f"sqlite:///{tmp_path.resolve()}/linewatch.db"


@pytest.mark.parametrize("url", ["ftp://op:pw-9@host/a.mp4", "gopher://cam/1", "smb://nas/v.mp4"])
def test_unsupported_url_scheme_is_named_without_credentials(url: str) -> None:
    cameras = [{"id": "cam1", "url": url}]
    with pytest.raises(ConfigError, match=r"cameras.0.url.*is not supported; use rtsp://") as info:
        load_settings(environ={}, overrides={"cameras": cameras})
    assert "pw-9" not in str(info.value)


@pytest.mark.parametrize("url", ["rtsp://cam/1", "RTSPS://cam/1", "file:///v.mp4", "/v/a.mp4"])
def test_supported_camera_urls_are_accepted(url: str) -> None:
    settings = load_settings(environ={}, overrides={"cameras": [{"id": "cam1", "url": url}]})
    assert settings.cameras[0].url == url
