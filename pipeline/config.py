"""Typed settings: one YAML file plus LINEWATCH_* environment overrides.

Nested keys are reached from the environment with a double underscore:
LINEWATCH_INFERENCE__MAX_BATCH=16 sets `inference.max_batch`. Values are
parsed as YAML scalars, so numbers and booleans keep their types.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from linewatch.pipeline import keys
from linewatch.pipeline.errors import ConfigError

ENV_PREFIX = "LINEWATCH_"
PROCESS_ENV = {
    "LINEWATCH_DEBUG",
    "LINEWATCH_LOG_LEVEL",
    "LINEWATCH_LOG_FORMAT",
    "LINEWATCH_PROFILE_DIR",
}  # read by the CLI, logging and profiling, not settings
DEFAULT_MODEL_DIR = Path(str(resources.files("linewatch.models") / "linewatch-tile"))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "srt")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


PartMethod = Literal["none", "contrast", "background", "fixed"]
PART_METHODS: tuple[str, ...] = get_args(PartMethod)
Box = tuple[int, int, int, int]


class PartsSettings(Strict):
    """How a camera finds the parts on the belt (`none`: whole frames, the default).

    Boxes and areas are in the pixels of the frame ingest decodes (after the camera's
    `roi` / `resize`, when set)."""

    method: PartMethod = Field(
        default="none",
        description="contrast: threshold + contours on a uniform belt; background: MOG2 on "
        "a textured one; fixed: configured ROIs (a camera triggered once per part); none: "
        "whole frames",
    )
    polarity: Literal["brighter", "darker"] = Field(
        default="brighter", description="contrast: parts are brighter (or darker) than the belt"
    )
    threshold: Literal["belt", "otsu"] | int = Field(
        default="belt",
        description="contrast: belt = the belt's grey level + min_contrast; otsu = Otsu's "
        "threshold (a frame whose two sides differ by less than min_contrast is an empty "
        "belt); a number = that grey level",
    )
    min_contrast: float = Field(
        default=12.0, gt=0, description="contrast: grey levels a part differs from the belt by"
    )
    belt_percentile: float = Field(
        default=25.0,
        gt=0,
        lt=100,
        description="contrast: the belt's grey level is this percentile of the frame (from "
        "the bright end for darker parts): the belt must cover that share of the frame",
    )
    blur: int = Field(default=5, ge=0, le=31, description="Gaussian blur kernel (odd; 0: off)")
    morph_kernel: int = Field(
        default=5, ge=0, le=31, description="opening + closing kernel of the mask (0: off)"
    )
    downscale: int = Field(default=2, ge=1, le=8, description="locate on a 1/n size image")
    merge_gap: int = Field(
        default=0,
        ge=0,
        description="boxes closer than this (px, both ways) are one part: for parts whose "
        "own dark bands split them; keep it below the smallest gap between parts",
    )
    min_area: int = Field(default=1500, ge=1, description="smallest part area, px²")
    max_area: int | None = Field(default=None, ge=1, description="largest part area, px²")
    min_aspect: float = Field(default=0.2, gt=0, description="smallest box width / height")
    max_aspect: float = Field(default=5.0, gt=0, description="largest box width / height")
    history: int = Field(default=300, ge=2, description="background: MOG2 history, frames")
    var_threshold: float = Field(default=25.0, gt=0, description="background: MOG2 threshold")
    background_ratio: float = Field(
        default=0.7,
        gt=0,
        le=1,
        description="background: weight share of a pixel's modes that counts as background "
        "(MOG2 default 0.9 learns parts that pass often as background)",
    )
    rois: tuple[Box, ...] = Field(default=(), description="fixed: part boxes x1, y1, x2, y2")
    edge_margin: int = Field(
        default=4, ge=1, description="px a box must keep from the frame edge to be a whole view"
    )
    min_frames: int = Field(
        default=2, ge=1, description="frames a track must be seen in before it counts as a part"
    )
    max_unmatched: int = Field(
        default=2, ge=0, description="sampled frames a part may go unseen before its track ends"
    )
    min_iou: float = Field(default=0.1, ge=0, le=1, description="box overlap that matches a track")
    max_part_s: float = Field(
        default=60.0, gt=0, description="a part in view longer ends as `stuck` (flagged)"
    )
    max_views: int = Field(default=4, ge=1, le=64, description="views sent per part, at most")
    view_every: int = Field(
        default=2, ge=1, description="every k-th whole view when the belt speed is unknown"
    )
    crop_margin: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="margin around the box, of its larger side; none: the model folder's "
        "Linewatch.crop_margin (what it was trained with), else 0 (tight crops)",
    )

    @field_validator("rois")
    @classmethod
    def _boxes_not_empty(cls, rois: tuple[Box, ...]) -> tuple[Box, ...]:
        for index, (x1, y1, x2, y2) in enumerate(rois):
            if min(x1, y1) < 0 or x1 >= x2 or y1 >= y2:
                raise ValueError(
                    f"parts.rois[{index}] {[x1, y1, x2, y2]} is not a box x1 < x2, y1 < y2 "
                    "with x1, y1 >= 0"
                )
        return rois

    @field_validator("threshold")
    @classmethod
    def _grey_level(cls, threshold: str | int) -> str | int:
        if isinstance(threshold, int) and not 0 <= threshold <= 255:
            raise ValueError(f"parts.threshold ({threshold}) must be a grey level 0..255")
        return threshold

    @field_validator("blur")
    @classmethod
    def _odd_blur(cls, blur: int) -> int:
        if blur and blur % 2 == 0:
            raise ValueError(f"parts.blur ({blur}) must be odd (or 0 for no blur)")
        return blur

    @model_validator(mode="after")
    def _consistent(self) -> PartsSettings:
        if self.max_area is not None and self.min_area >= self.max_area:
            raise ValueError(
                f"parts.min_area ({self.min_area}) must be below parts.max_area ({self.max_area})"
            )
        if self.min_aspect > self.max_aspect:
            raise ValueError(
                f"parts.min_aspect ({self.min_aspect}) must not exceed parts.max_aspect "
                f"({self.max_aspect})"
            )
        if self.method == "fixed" and not self.rois:
            raise ValueError("parts.method fixed needs parts.rois (boxes x1, y1, x2, y2)")
        if self.rois and self.method != "fixed":
            raise ValueError(f"parts.rois is only read with method fixed, not {self.method}")
        return self


class CameraSettings(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    url: str
    fps: float | None = Field(default=None, gt=0)
    live: bool | None = None  # default: true for stream URLs (and realtime replays)
    realtime: bool = False  # replay a file at its frame rate, as a live camera would send it
    roi: tuple[int, int, int, int] | None = None
    resize: tuple[int, int] | None = None
    encoding: Literal["jpeg", "png", "raw-u8"] = "jpeg"
    jpeg_quality: int = Field(default=90, ge=10, le=100)
    parts: PartsSettings = PartsSettings()

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        match = _SCHEME.match(url)
        if match and match[1].lower() not in (*STREAM_SCHEMES, "file"):
            supported = ", ".join(f"{s}://" for s in STREAM_SCHEMES)
            raise ValueError(
                f"scheme {match[1]!r} is not supported; use {supported}, file:// or a file path"
            )
        return url


class IngestSettings(Strict):
    batch_size: int = Field(default=16, ge=1, le=1000)
    max_stream_len: int = Field(default=2000, ge=10)
    high_watermark: int = Field(default=500, ge=1)
    open_timeout_s: float = Field(default=10.0, gt=0)
    read_timeout_s: float = Field(default=5.0, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    cameras_per_process: int = Field(
        default=8,
        ge=1,
        le=256,
        description="`linewatch run` ingests this many cameras per process, one thread each "
        "(live cameras and files in separate processes)",
    )
    read_ahead: int = Field(
        default=8,
        ge=0,
        le=256,
        description="file cameras not replayed in real time: frames decoded ahead by a "
        "thread of their own while the current ones are located, cropped and sent (0: off)",
    )


class InferenceSettings(Strict):
    model_dir: Path = DEFAULT_MODEL_DIR
    shadow_model_dir: Path | None = None  # also run, results stored apart, never alerted on
    max_batch: int = Field(default=32, ge=1, le=512)
    max_wait_ms: int = Field(default=20, ge=0, le=10_000)
    file_max_wait_ms: int = Field(default=500, ge=0, le=10_000)  # batches of file views only
    threads: int = Field(default=2, ge=1, le=256)
    device: Literal["auto", "cpu", "gpu"] = "auto"
    tensorrt: bool = False
    freshness_s: float = Field(default=5.0, gt=0)
    workers: int = Field(default=1, ge=1, le=64)


class SinkSettings(Strict):
    batch_size: int = Field(default=256, ge=1, le=10_000)
    block_ms: int = Field(default=200, ge=1)
    lease_ttl_s: float = Field(
        default=15.0,
        gt=0.5,
        le=600,
        description="one active sink per line: a standby sink takes over this long after "
        "the active one died",
    )


class LineAlarmSettings(Strict):
    """A line alarm (alert kind `line`) per camera in parts mode, on its last parts."""

    n: int = Field(default=20, ge=1, description="parts in the window the NG rate is taken over")
    open_rate: float = Field(
        default=0.3, gt=0, le=1, description="NG rate over the last n parts that opens the alarm"
    )
    close_rate: float = Field(
        default=0.1, ge=0, lt=1, description="NG rate at or below which an open alarm closes"
    )
    run: int = Field(default=5, ge=0, description="k NG parts in a row also open it (0: off)")

    @field_validator("close_rate")
    @classmethod
    def _hysteresis(cls, close_rate: float, info: Any) -> float:
        open_rate = info.data.get("open_rate", 1.0)
        if close_rate >= open_rate:
            raise ValueError(
                f"alerts.line.close_rate ({close_rate}) must be below "
                f"alerts.line.open_rate ({open_rate})"
            )
        return close_rate


class AlertSettings(Strict):  # k, n, m, cooldown_s: the frame rule (frame mode)
    k: int = Field(default=3, ge=1)
    n: int = Field(default=5, ge=1)
    m: int = Field(default=5, ge=1)
    cooldown_s: float = Field(default=10.0, ge=0)  # frame mode only; parts have no cooldown
    channel: str = keys.ALERTS_CHANNEL
    verdict_channel: str = keys.VERDICTS_CHANNEL  # every part's verdict (OK too), PartVerdict JSON
    webhook_url: str | None = None  # delivered by RQ jobs (`linewatch worker rq`)
    webhook_secret: SecretStr | None = None  # HMAC-SHA256 signature header when set
    webhook_timeout_s: float = Field(default=10.0, gt=0, le=300)  # then the attempt is retried
    line: LineAlarmSettings = LineAlarmSettings()

    @field_validator("n")
    @classmethod
    def _n_at_least_k(cls, n: int, info: Any) -> int:
        k = info.data.get("k", 1)
        if n < k:
            raise ValueError(f"alerts.n ({n}) must be >= alerts.k ({k})")
        return n


class ApiSettings(Strict):
    """`linewatch serve` (and `linewatch run` when enabled): the HTTP API and dashboard."""

    enabled: bool = False  # also start it from `linewatch run` (a supervised role)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    token: SecretStr | None = None  # Bearer token; none: listen on 127.0.0.1 only, no auth
    user: str = Field(default="operator", pattern=r"^[A-Za-z0-9_.@ -]{1,64}$")  # reviewer name
    max_upload_mb: float = Field(default=5.0, gt=0, le=200)
    max_side_px: int = Field(default=8192, ge=16, le=65_535)
    max_files: int = Field(default=16, ge=1, le=256)
    uncertainty_band: float = Field(default=0.15, ge=0, le=1)  # |score - threshold| queued first
    threads: int = Field(default=1, ge=1, le=64)  # /v1/classify predictor threads


class VerdictSettings(Strict):
    """How the sink turns a part's view results into one verdict (parts mode)."""

    top_views: int = Field(
        default=2, ge=1, le=64, description="defect when the mean of the top views' scores..."
    )
    defect_threshold: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="...reaches this; None: the model folder's Linewatch.defect_threshold",
    )
    on_uninspected: Literal["reject", "accept"] = Field(
        default="reject",
        description="reject: a part without an inferred view is NG (alert, line alarm)",
    )
    deadline_ms: int = Field(
        default=3000,
        ge=1,
        le=3_600_000,
        description="live cameras: the verdict is due this long after the part left view "
        "(verdict_deadline_ms), else the part is sent as uninspected",
    )
    file_wait_s: float = Field(
        default=600.0,
        gt=0,
        description="files (read faster than real time, their views queue behind the "
        "backlog): a part waits this long for its views; only lost views reach it",
    )
    late_window_s: float = Field(
        default=300.0,
        ge=0,
        description="after the deadline, views still arriving are recorded as a late verdict",
    )


MQTT_SCHEMES = ("mqtt", "mqtts")


class OutputsSettings(Strict):
    """Where part verdicts go besides SQL: an MQTT broker for reject gates and PLC bridges."""

    mqtt_url: str | None = None  # mqtt://user:pw@host:1883 or mqtts://... (TLS)
    mqtt_topic: str | None = Field(default=None, pattern=r"^[^#+\s]+[^/#+\s]$")  # linewatch/<line>
    mqtt_ca_file: Path | None = None  # CA bundle for mqtts:// (default: the system's)
    mqtt_client_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    mqtt_queue_max: int = Field(default=10_000, ge=1, le=1_000_000)  # then the oldest is dropped
    mqtt_inflight_max: int = Field(default=100, ge=1, le=65_000)  # sent, not yet acknowledged
    mqtt_keepalive_s: int = Field(default=30, ge=5, le=3600)
    mqtt_reconnect_min_s: float = Field(default=0.5, gt=0, le=60)
    mqtt_reconnect_max_s: float = Field(default=30.0, gt=0, le=3600)
    mqtt_status_every_s: float = Field(default=10.0, gt=0, le=3600)  # retained camera status

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_scheme(cls, url: str | None) -> str | None:
        if url is None:
            return None
        match = _SCHEME.match(url)
        if not match or match[1].lower() not in MQTT_SCHEMES:
            raise ValueError("expected mqtt://[user:password@]host[:port] or mqtts://...")
        return url


class Settings(Strict):
    line: str = Field(default="demo", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    redis_url: str | None = None
    database_url: str | None = None
    data_dir: Path = Path("linewatch-data")
    metrics_port: int = Field(default=0, ge=0, le=65535)  # 0: off; run gives worker i port+i
    cameras: tuple[CameraSettings, ...] = ()
    ingest: IngestSettings = IngestSettings()
    inference: InferenceSettings = InferenceSettings()
    sink: SinkSettings = SinkSettings()
    alerts: AlertSettings = AlertSettings()
    api: ApiSettings = ApiSettings()
    verdict: VerdictSettings = VerdictSettings()
    outputs: OutputsSettings = OutputsSettings()

    @property
    def frames_stream(self) -> str:
        return keys.frames_stream(self.line)

    @property
    def results_stream(self) -> str:
        return keys.results_stream(self.line)

    @property
    def verdicts_channel(self) -> str:
        """Where the sink announces every part's verdict (`alerts.verdict_channel`)."""
        return self.alerts.verdict_channel

    @property
    def sink_lease_key(self) -> str:
        """Redis key naming the line's active sink (one sink decides a line's parts)."""
        return keys.sink_lease(self.line)

    @property
    def stats_key(self) -> str:
        """Redis hash of line-wide counters (inferred, stale, written, ...)."""
        return keys.stats(self.line)

    @property
    def dead_letter_stream(self) -> str:
        return keys.dead_letter_stream(self.line)

    def camera_key(self, camera_id: str, kind: str) -> str:
        """Per-camera Redis key of `kind`: keys.SEQ, PART_ID, INGEST or STATES."""
        return keys.camera(self.line, camera_id, kind)

    def worker_key(self, worker_id: str) -> str:
        """Heartbeat hash of a running inference or sink worker (expires when it dies)."""
        return keys.worker(self.line, worker_id)

    def require_redis_url(self, who: str) -> str:
        """The Redis URL; a ConfigError saying `who` needs one when none is configured."""
        if not self.redis_url:
            raise ConfigError(f"{who} needs redis_url (or LINEWATCH_REDIS_URL)")
        return self.redis_url

    @property
    def mqtt_topic(self) -> str:
        """Prefix of every MQTT topic: outputs.mqtt_topic, by default `linewatch/<line>`."""
        return self.outputs.mqtt_topic or f"linewatch/{self.line}"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'linewatch.db').resolve()}"


def load_settings(
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read `path` (optional), apply LINEWATCH_* variables, then `overrides`."""
    source = str(path) if path else "defaults"
    data = _read_yaml(path) if path else {}
    env_vars = {
        name[len(ENV_PREFIX) :].lower().replace("__", "."): name
        for name in (os.environ if environ is None else environ)
        if name.startswith(ENV_PREFIX) and name not in PROCESS_ENV
    }
    env_data = _env_overrides(os.environ if environ is None else environ)
    merged = _deep_merge(_deep_merge(data, env_data), dict(overrides or {}))
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid configuration in {source}: {_describe(exc, env_vars)}"
        ) from None  # the cause repeats the values, secrets included


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} not found; pass an existing YAML file") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of settings at the top")
    return data


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name in PROCESS_ENV:
            continue
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        node = result
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = _parse_scalar(raw)
    return result


def _parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _describe(exc: ValidationError, env_vars: Mapping[str, str]) -> str:
    problems = []
    for error in exc.errors():
        key = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            problem = f"unknown key '{key}'"
        else:
            problem = f"'{key}': {error['msg']}"
        origin = next((var for prefix, var in env_vars.items() if key.startswith(prefix)), None)
        problems.append(f"{problem} (from environment variable {origin})" if origin else problem)
    return "; ".join(problems)
