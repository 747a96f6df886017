from pathlib import Path

import pytest
import yaml

from linewatch.config_example import example_yaml
from linewatch.pipeline.config import (
    PARTS_CLASSES,
    BackgroundParts,
    CameraSettings,
    ContrastParts,
    FixedParts,
    FrameParts,
    LineAlarmSettings,
    MqttSettings,
    RedisSettings,
    Settings,
    WebhookSettings,
    load_settings,
)
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


def test_the_removed_frame_rule_keys_are_named_with_their_replacements() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, overrides={"alerts": {"k": 4, "n": 2, "cooldown_s": 0}})
    message = str(caught.value)
    assert "alerts.k moved to verdict.line_alarm.run" in message
    assert "alerts.n moved to verdict.line_alarm.n" in message
    assert "alerts.cooldown_s is removed: every NG part is announced once" in message
    assert "alerts.m " not in message, "only the keys given"


@pytest.mark.parametrize(
    ("old", "moved"),
    [
        (
            "alerts:\n  webhook_url: http://h/hook\n",
            "alerts.webhook_url moved to outputs.webhook.url",
        ),
        (
            "alerts:\n  webhook_secret: s3cret\n",
            "alerts.webhook_secret moved to outputs.webhook.secret",
        ),
        ("alerts:\n  channel: lw:a\n", "alerts.channel moved to outputs.pubsub.alerts_channel"),
        (
            "alerts:\n  verdict_channel: lw:v\n",
            "alerts.verdict_channel moved to outputs.pubsub.verdicts_channel",
        ),
        ("alerts:\n  line: {n: 5}\n", "alerts.line moved to verdict.line_alarm"),
        ("outputs:\n  mqtt_url: mqtt://h\n", "outputs.mqtt_url moved to outputs.mqtt.url"),
        (
            "outputs:\n  mqtt_inflight_max: 5\n",
            "outputs.mqtt_inflight_max moved to outputs.mqtt.inflight_max",
        ),
    ],
)
def test_an_old_key_fails_naming_where_it_moved(tmp_path: Path, old: str, moved: str) -> None:
    path = write(tmp_path, old)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert moved in str(caught.value) and str(path) in str(caught.value)
    assert "s3cret" not in str(caught.value)


def test_an_old_environment_variable_is_named_with_where_it_moved() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"LINEWATCH_ALERTS__WEBHOOK_URL": "http://h/hook"})
    message = str(caught.value)
    assert "alerts.webhook_url moved to outputs.webhook.url" in message
    assert "(from environment variable LINEWATCH_ALERTS__WEBHOOK_URL)" in message


def test_an_empty_alerts_section_is_refused_too() -> None:
    with pytest.raises(ConfigError, match="alerts moved: its keys are now in outputs.webhook"):
        load_settings(environ={}, overrides={"alerts": {}})


def test_settings_by_concern_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
outputs:
  webhook: {url: http://h/hook, secret: hookpw, timeout_s: 3}
  mqtt: {url: "mqtt://gate:mqpw@broker:1883", topic: lw/p3, inflight_max: 7}
  pubsub: {alerts_channel: "lw:a", verdicts_channel: "lw:v"}
verdict:
  top_views: 3
  line_alarm: {n: 8, open_rate: 0.5, close_rate: 0.25, run: 0}
cameras:
  - {id: a, url: a.mp4}
  - {id: b, url: b.mp4, parts: {method: contrast, polarity: darker, min_area: 900}}
  - {id: c, url: c.mp4, parts: {method: background, history: 50, max_views: 2}}
  - {id: d, url: d.mp4, parts: {method: fixed, rois: [[0, 0, 10, 10]], crop_margin: 0.1}}
""",
    )
    env = {"LINEWATCH_OUTPUTS__MQTT__KEEPALIVE_S": "60"}
    settings = load_settings(path, environ=env)
    hook, mqtt = settings.outputs.webhook, settings.outputs.mqtt
    assert (hook.url, hook.timeout_s) == ("http://h/hook", 3)
    assert hook.secret is not None and hook.secret.get_secret_value() == "hookpw"
    assert "hookpw" not in repr(settings)
    assert (mqtt.topic, mqtt.inflight_max, mqtt.keepalive_s) == ("lw/p3", 7, 60)
    assert settings.mqtt_topic == "lw/p3"
    assert settings.outputs.pubsub.verdicts_channel == "lw:v"
    assert (settings.verdict.top_views, settings.verdict.line_alarm.n) == (3, 8)
    a, b, c, d = (camera.parts for camera in settings.cameras)
    assert isinstance(a, FrameParts) and a.method == "none"
    assert isinstance(b, ContrastParts) and (b.sides, b.min_area) == ("darker", 900)
    assert isinstance(c, BackgroundParts) and (c.history, c.max_views) == (50, 2)
    assert isinstance(d, FixedParts) and (d.rois, d.crop_margin) == (((0, 0, 10, 10),), 0.1)


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        (
            {"method": "contrast", "history": 50},
            "parts.history belongs to method background, not contrast",
        ),
        (
            {"method": "background", "polarity": "darker"},
            "parts.polarity belongs to method contrast, not background",
        ),
        (
            {"method": "fixed", "rois": [[0, 0, 5, 5]], "min_area": 10},
            "parts.min_area belongs to methods contrast, background, not fixed",
        ),
        ({"min_frames": 3}, "parts.min_frames belongs to methods contrast, background, not none"),
    ],
)
def test_a_parts_key_of_another_method_names_its_method(parts: dict, message: str) -> None:
    camera = {"id": "c1", "url": "a.mp4", "parts": parts}
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={}, overrides={"cameras": [camera]})
    assert f"'cameras.0.parts': Value error, {message}" in str(caught.value)


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


def test_config_example_shows_every_key_once_and_loads_back(tmp_path: Path) -> None:
    text = example_yaml()
    data = yaml.safe_load(text)
    assert set(data) == set(Settings.model_fields)
    for section in ("ingest", "inference", "sink", "supervisor", "verdict", "outputs", "api"):
        model = Settings.model_fields[section].annotation
        assert set(data[section]) == set(model.model_fields), section
    assert set(data["verdict"]["line_alarm"]) == set(LineAlarmSettings.model_fields)
    for name, model in (("webhook", WebhookSettings), ("mqtt", MqttSettings)):
        assert set(data["outputs"][name]) == set(model.model_fields)
    assert set(data["cameras"][0]) == set(CameraSettings.model_fields)
    shown = {key for camera in data["cameras"] for key in camera["parts"]}
    assert shown == {key for cls in PARTS_CLASSES.values() for key in cls.model_fields}
    for key in RedisSettings.model_fields:  # commented out: redis_url is the default way
        assert f"\n#   {key}: " in text, key
    assert "# Gaussian blur kernel, odd (0: off)\n      blur: 5\n" in text, "descriptions"
    settings = load_settings(write(tmp_path, text), environ={})
    assert settings.model_dump(exclude={"line", "cameras", "inference"}) == Settings().model_dump(
        exclude={"line", "cameras", "inference"}
    ), "every value shown is the default"
