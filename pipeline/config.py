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
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    TypeAdapter,
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


class MethodParts(Strict):
    """A camera's `parts:` block: one class per method, each with only its own keys
    (shared keys in the base classes below); a key of another method is refused, naming
    the method(s) it belongs to. `PartsSettings` is their union on `method`."""

    method: PartMethod

    @model_validator(mode="before")
    @classmethod
    def _own_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        method = data.get("method", cls.model_fields["method"].default)
        foreign = {key: _owners(key) for key in data if key not in cls.model_fields}
        moves = [
            f"parts.{key} belongs to method{'s' * (len(owners) > 1)} {', '.join(owners)}, "
            f"not {method}"
            for key, owners in foreign.items()
            if owners
        ]
        if moves:
            raise ValueError(
                "; ".join(moves) + ": set parts.method to the method that reads it, or drop it"
            )
        return data


class FrameParts(MethodParts):
    """`none`: frame mode, every sampled frame is a part of one view (the whole frame or
    the camera's roi)."""

    method: Literal["none"] = Field(
        default="none",
        description="none: frame mode, every sampled frame is a part of one view; contrast: "
        "threshold + contours on a uniform belt; background: MOG2 on a textured one; "
        "fixed: configured ROIs (a camera triggered once per part)",
    )


class LocatedParts(MethodParts):
    """Keys of every method that locates parts (boxes and areas are in the pixels of the
    frame ingest decodes: after the camera's `roi` / `resize`, when set)."""

    crop_margin: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="margin around the box, of its larger side; null: the model folder's "
        "Linewatch.crop_margin (what it was trained with), else 0 (tight crops)",
    )


class FixedParts(LocatedParts):
    """`fixed`: the configured ROIs on every frame, for a camera triggered once per part
    (each frame shows new parts, one view each: nothing is tracked)."""

    method: Literal["fixed"] = Field(default="fixed", description="fixed: configured ROIs")
    rois: tuple[Box, ...] = Field(
        default=(),
        description="part boxes [x1, y1, x2, y2], in the frame's pixels",
        examples=[((0, 0, 320, 240), (320, 0, 640, 240))],
    )

    @field_validator("rois")
    @classmethod
    def _boxes_not_empty(cls, rois: tuple[Box, ...]) -> tuple[Box, ...]:
        if not rois:
            raise ValueError("parts.method fixed needs parts.rois (boxes x1, y1, x2, y2)")
        for index, (x1, y1, x2, y2) in enumerate(rois):
            if min(x1, y1) < 0 or x1 >= x2 or y1 >= y2:
                raise ValueError(
                    f"parts.rois[{index}] {[x1, y1, x2, y2]} is not a box x1 < x2, y1 < y2 "
                    "with x1, y1 >= 0"
                )
        return rois

    @model_validator(mode="after")
    def _has_rois(self) -> FixedParts:
        if not self.rois:
            raise ValueError("parts.method fixed needs parts.rois (boxes x1, y1, x2, y2)")
        return self


class TrackedParts(LocatedParts):
    """Keys of the methods that find moving parts by a foreground mask (`contrast`,
    `background`): tracking along the belt, view picking, cleaning and filtering the
    mask's boxes."""

    edge_margin: int = Field(
        default=4, ge=1, description="px a box must keep from every frame edge to be a whole view"
    )
    min_frames: int = Field(
        default=2,
        ge=1,
        description="sightings before a track counts as a part (one-frame blobs never do)",
    )
    max_unmatched: int = Field(
        default=2, ge=0, description="sampled frames a part may go unseen before its track ends"
    )
    min_iou: float = Field(
        default=0.1,
        ge=0,
        le=1,
        description="box overlap that matches a track (else centre distance)",
    )
    max_part_s: float = Field(
        default=60.0, gt=0, description="a part in view longer ends as `stuck` (flagged)"
    )
    max_views: int = Field(default=4, ge=1, le=64, description="views sent per part, at most")
    view_every: int = Field(
        default=2, ge=1, description="every k-th whole view when the belt speed is unknown"
    )
    blur: int = Field(default=5, ge=0, le=31, description="Gaussian blur kernel, odd (0: off)")
    morph_kernel: int = Field(
        default=5, ge=0, le=31, description="opening + closing kernel of the mask (0: off)"
    )
    downscale: int = Field(
        default=2,
        ge=1,
        le=8,
        description="locate on a 1/n size image (boxes come back in frame pixels)",
    )
    merge_gap: int | None = Field(
        default=None,
        ge=0,
        description="pieces of one part are joined into one box when they lie side by side "
        "(overlapping by half one way) and closer than this the other way, px; null: a "
        "third of the larger piece's size; 0: never join",
    )
    min_area: int = Field(default=1500, ge=1, description="smallest part box area, px²")
    max_area: int | None = Field(
        default=None, ge=1, description="largest part box area, px² (null: no limit)"
    )
    min_aspect: float = Field(default=0.2, gt=0, description="smallest box width / height")
    max_aspect: float = Field(default=5.0, gt=0, description="largest box width / height")

    @field_validator("blur")
    @classmethod
    def _odd_blur(cls, blur: int) -> int:
        if blur and blur % 2 == 0:
            raise ValueError(f"parts.blur ({blur}) must be odd (or 0 for no blur)")
        return blur

    @model_validator(mode="after")
    def _limits(self) -> TrackedParts:
        if self.max_area is not None and self.min_area >= self.max_area:
            raise ValueError(
                f"parts.min_area ({self.min_area}) must be below parts.max_area ({self.max_area})"
            )
        if self.min_aspect > self.max_aspect:
            raise ValueError(
                f"parts.min_aspect ({self.min_aspect}) must not exceed parts.max_aspect "
                f"({self.max_aspect})"
            )
        return self


class ContrastParts(TrackedParts):
    """`contrast`: what differs from a uniform belt's grey (threshold + contours)."""

    method: Literal["contrast"] = Field(
        default="contrast", description="contrast: threshold + contours on a uniform belt"
    )
    polarity: Literal["either", "brighter", "darker"] | None = Field(
        default=None,
        description="parts differ from the belt either way (dark tiles whose grey levels "
        "straddle the belt's), or only brighter, or only darker; null: either with "
        "threshold belt, brighter with otsu or a grey level",
    )
    threshold: Literal["belt", "otsu"] | int = Field(
        default="belt",
        description="belt: the belt's grey level (its most common grey for either; a "
        "percentile for brighter/darker) ± the contrast; otsu: Otsu's threshold (a frame "
        "whose two sides differ by less than min_contrast is an empty belt); a number: "
        "that grey level 0..255",
    )
    min_contrast: float = Field(
        default=4.0, gt=0, description="grey levels a part differs from the belt by, at least"
    )
    noise_factor: float = Field(
        default=3.0,
        ge=0,
        description="threshold belt: the contrast is also at least this many times the "
        "belt's noise, measured on every frame (so a noisy camera draws no slivers)",
    )
    belt_percentile: float = Field(
        default=25.0,
        gt=0,
        lt=100,
        description="brighter/darker: the belt's grey level is this percentile of the "
        "frame (from the bright end for darker parts): the belt must cover that share",
    )

    @field_validator("threshold")
    @classmethod
    def _grey_level(cls, threshold: str | int) -> str | int:
        if isinstance(threshold, int) and not 0 <= threshold <= 255:
            raise ValueError(f"parts.threshold ({threshold}) must be a grey level 0..255")
        return threshold

    @property
    def sides(self) -> Literal["either", "brighter", "darker"]:
        """The polarity in force: the configured one, else either on the belt's level
        and brighter on Otsu's or a fixed grey."""
        if self.polarity is not None:
            return self.polarity
        return "either" if self.threshold == "belt" else "brighter"

    @model_validator(mode="after")
    def _one_way(self) -> ContrastParts:
        if self.polarity == "either" and self.threshold != "belt":
            raise ValueError(
                f"parts.threshold {self.threshold} cuts one way: set parts.polarity to "
                "brighter or darker (or use threshold: belt)"
            )
        return self


class BackgroundParts(TrackedParts):
    """`background`: what differs from a learned background (MOG2), for a textured
    background that stays put."""

    method: Literal["background"] = Field(
        default="background", description="background: MOG2 on a textured background"
    )
    history: int = Field(default=300, ge=2, description="MOG2 history, frames")
    var_threshold: float = Field(default=25.0, gt=0, description="MOG2 variance threshold")
    background_ratio: float = Field(
        default=0.7,
        gt=0,
        le=1,
        description="weight share of a pixel's modes that counts as background (MOG2's "
        "default 0.9 learns parts that pass often as background)",
    )


PARTS_CLASSES: dict[str, type[MethodParts]] = {
    "none": FrameParts,
    "contrast": ContrastParts,
    "background": BackgroundParts,
    "fixed": FixedParts,
}


def _owners(key: str) -> list[str]:
    """The parts methods that read `key`."""
    return [method for method, cls in PARTS_CLASSES.items() if key in cls.model_fields]


def _parts_method(value: Any) -> str:
    """The `parts:` block's method: its `method` key, none (frame mode) when absent."""
    if isinstance(value, Mapping):
        return str(value.get("method", "none"))
    return str(getattr(value, "method", "none"))


PartsSettings = Annotated[
    Annotated[FrameParts, Tag("none")]
    | Annotated[ContrastParts, Tag("contrast")]
    | Annotated[BackgroundParts, Tag("background")]
    | Annotated[FixedParts, Tag("fixed")],
    Discriminator(
        _parts_method,
        custom_error_type="parts_method",
        custom_error_message=f"parts.method must be one of {', '.join(PART_METHODS)}",
    ),
]
PARTS_ADAPTER: TypeAdapter[PartsSettings] = TypeAdapter(PartsSettings)


class CameraSettings(Strict):
    """One camera: a stream URL or a video file, and how parts are found in its frames."""

    id: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="the camera's id (letters, digits, _ . -), in every row and stream entry",
        examples=["cam1"],
    )
    url: str = Field(
        description="rtsp(s)://, rtmp://, http(s)://, udp://, srt://, file:// or a file path "
        "(a file is analysed completely, never dropped); credentials are redacted in logs",
        examples=["rtsp://user:secret@10.0.0.5/stream1"],
    )
    fps: float | None = Field(
        default=None, gt=0, description="sample down to this rate (by pts); null: every frame"
    )
    live: bool | None = Field(
        default=None,
        description="null: true for stream URLs (and realtime replays), false for files",
    )
    realtime: bool = Field(
        default=False, description="replay a file at its frame rate, as a live camera sends it"
    )
    roi: tuple[int, int, int, int] | None = Field(
        default=None, description="crop [x, y, w, h] of the decoded frame; null: whole frame"
    )
    resize: tuple[int, int] | None = Field(
        default=None, description="[width, height] the frame (or roi) is resized to"
    )
    encoding: Literal["jpeg", "png", "raw-u8"] = Field(
        default="jpeg", description="how views travel in Redis: jpeg | png | raw-u8"
    )
    jpeg_quality: int = Field(default=90, ge=10, le=100, description="encoding jpeg: quality")
    parts: PartsSettings = Field(
        default=FrameParts(),
        description="how the camera finds the parts on the belt: one block per "
        "parts.method (none, the default: frame mode)",
    )

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
    """Ingest: decoding cameras, locating parts, sending views to Redis."""

    batch_size: int = Field(
        default=16, ge=1, le=1000, description="frames per pipelined XADD (files)"
    )
    max_stream_len: int = Field(
        default=2000,
        ge=10,
        description="MAXLEN ~ bound of the frames stream; live frames are shed (counted) at "
        "half of it",
    )
    high_watermark: int = Field(
        default=500, ge=1, description="file ingest pauses while the frames backlog is above this"
    )
    open_timeout_s: float = Field(default=10.0, gt=0, description="opening a camera, at most")
    read_timeout_s: float = Field(
        default=5.0, gt=0, description="a live camera silent this long is reconnected"
    )
    reconnect_max_s: float = Field(
        default=30.0, gt=0, description="live cameras reconnect with capped exponential backoff"
    )
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
    preview_fps: float = Field(
        default=2.0,
        ge=0,
        le=30,
        description="live view: latest frames kept per camera and second, with their boxes "
        "(0: off)",
    )
    preview_width: int = Field(
        default=400, ge=64, le=1920, description="live view: frames downscaled to this width"
    )
    preview_ttl_s: int = Field(
        default=3600, ge=10, description="live view: a stopped camera's last frame is kept so long"
    )


class InferenceSettings(Strict):
    """Inference workers: the model and how views are batched through it."""

    model_dir: Path = Field(
        default=DEFAULT_MODEL_DIR,
        description="the exported model folder (default: the shipped linewatch-tile)",
        examples=[Path("models/linewatch-tile")],
    )
    shadow_model_dir: Path | None = Field(
        default=None,
        description="a second model also run on every view: results stored apart, never alerted on",
    )
    max_batch: int = Field(default=32, ge=1, le=512, description="views per predictor call")
    max_wait_ms: int = Field(
        default=20, ge=0, le=10_000, description="a batch fills for this long at most"
    )
    file_max_wait_ms: int = Field(
        default=500,
        ge=0,
        le=10_000,
        description="a batch of file views only fills for longer: their latency does not "
        "matter, and small predictor calls cost ingest's CPU",
    )
    threads: int = Field(
        default=2, ge=1, le=256, description="CPU math threads per worker (oneDNN)"
    )
    device: Literal["auto", "cpu", "gpu"] = Field(default="auto", description="auto | cpu | gpu")
    tensorrt: bool = Field(default=False, description="GPU: TensorRT FP16")
    freshness_s: float = Field(
        default=5.0,
        gt=0,
        description="live views older than this are not inferred; stored with status stale",
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="inference processes started by `linewatch run`"
    )
    passed_crops_every: int = Field(
        default=20,
        ge=0,
        description="parts mode: one passed part in this many (by part id) keeps its "
        "evidence crop, so passed parts can be audited and a kind the model passes can be "
        "reviewed and added to the gallery; 0: only flagged parts keep a crop",
    )


class SinkSettings(Strict):
    """The sink: results into SQL, verdicts decided and announced."""

    batch_size: int = Field(
        default=256, ge=1, le=10_000, description="results written per SQL transaction, at most"
    )
    block_ms: int = Field(default=200, ge=1, description="XREADGROUP BLOCK while idle")
    lease_ttl_s: float = Field(
        default=15.0,
        gt=0.5,
        le=600,
        description="one active sink per line: a standby sink takes over this long after "
        "the active one died",
    )


class SupervisorSettings(Strict):
    """`linewatch run`'s supervision of its worker processes."""

    hang_limit_s: float = Field(
        default=60.0,
        ge=0,
        description="`linewatch run` kills and restarts an inference worker or sink whose "
        "heartbeat is older than this (a hung predictor or SQL call); 0: never",
    )


class LineAlarmSettings(Strict):
    """The line alarm (alert kind `line`), per camera, on its last parts (frame mode:
    its one-view parts)."""

    n: int = Field(default=20, ge=1, description="parts in the window the NG rate is taken over")
    open_rate: float = Field(
        default=0.3, gt=0, le=1, description="NG rate over the last n parts that opens the alarm"
    )
    close_rate: float = Field(
        default=0.1,
        ge=0,
        lt=1,
        description="NG rate at or below which an open alarm closes (hysteresis)",
    )
    run: int = Field(default=5, ge=0, description="k NG parts in a row also open it (0: off)")

    @field_validator("close_rate")
    @classmethod
    def _hysteresis(cls, close_rate: float, info: Any) -> float:
        open_rate = info.data.get("open_rate", 1.0)
        if close_rate >= open_rate:
            raise ValueError(
                f"verdict.line_alarm.close_rate ({close_rate}) must be below "
                f"verdict.line_alarm.open_rate ({open_rate})"
            )
        return close_rate


class ApiSettings(Strict):
    """`linewatch serve` (and `linewatch run` when enabled): the HTTP API and dashboard."""

    enabled: bool = Field(
        default=False, description="also start it from `linewatch run` (a supervised role)"
    )
    host: str = Field(default="127.0.0.1", description="listen address")
    port: int = Field(default=8000, ge=1, le=65535, description="listen port")
    token: SecretStr | None = Field(
        default=None, description="Bearer token; null: listen on 127.0.0.1 only, no auth"
    )
    user: str = Field(
        default="operator",
        pattern=r"^[A-Za-z0-9_.@ -]{1,64}$",
        description="the reviewer name recorded with reviews",
    )
    max_upload_mb: float = Field(default=5.0, gt=0, le=200, description="/v1/classify: per file")
    max_side_px: int = Field(
        default=8192, ge=16, le=65_535, description="/v1/classify: an image's longer side"
    )
    max_files: int = Field(default=16, ge=1, le=256, description="/v1/classify: files per call")
    uncertainty_band: float = Field(
        default=0.15, ge=0, le=1, description="review queue: |score - threshold| below this first"
    )
    threads: int = Field(default=1, ge=1, le=64, description="/v1/classify predictor threads")


class VerdictSettings(Strict):
    """How the sink turns a part's view results into one verdict, and the line alarm on
    the verdicts."""

    top_views: int = Field(
        default=2,
        ge=1,
        le=64,
        description="defect when the mean of the top views' defect scores ...",
    )
    defect_threshold: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description="... reaches this; null: the model folder's Linewatch.defect_threshold",
    )
    novelty_threshold: float | None = Field(
        default=None,
        ge=0,
        le=2,
        description="a model with a gallery: a part is also NG as `unknown` when its novelty "
        "reaches this; null: the model folder's Gallery.novelty_threshold",
    )
    on_uninspected: Literal["reject", "accept"] = Field(
        default="reject",
        description="reject: a part without an inferred view is NG (alert, line alarm); accept",
    )
    deadline_ms: int = Field(
        default=3000,
        ge=1,
        le=3_600_000,
        description="live cameras: the verdict is due this long after the part left view, "
        "else the part is sent as uninspected",
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
    line_alarm: LineAlarmSettings = Field(
        default=LineAlarmSettings(),
        description="the line alarm per camera: an NG rate or a run of NG parts",
    )

    @property
    def rejects_uninspected(self) -> bool:
        """Whether a part without an inferred view (or decided late) is NG: the gate rejects it."""
        return self.on_uninspected == "reject"


MQTT_SCHEMES = ("mqtt", "mqtts")


class WebhookSettings(Strict):
    """Alerts POSTed as JSON to a URL, delivered by RQ jobs (`linewatch worker rq`)."""

    url: str | None = Field(
        default=None,
        description="POST each alert state change as JSON here; null: no webhook",
    )
    secret: SecretStr | None = Field(
        default=None,
        description="signs the body (X-Linewatch-Signature: sha256=HMAC); stays in the sink, "
        "only the signature is queued in Redis",
    )
    timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="a receiver that does not answer in time fails the attempt; retried "
        "after 5 s, 15 s, 1 min, 5 min, 15 min",
    )


class MqttSettings(Strict):
    """Every part's verdict and each camera's status to an MQTT broker, for reject gates
    and PLC bridges (see "Outputs: MQTT")."""

    url: str | None = Field(
        default=None,
        description="mqtt://user:password@broker:1883 or mqtts://... (TLS); null: no MQTT",
    )
    topic: str | None = Field(
        default=None,
        pattern=r"^[^#+\s]+[^/#+\s]$",
        description="topic prefix; null: linewatch/<line>",
    )
    ca_file: Path | None = Field(
        default=None, description="mqtts: the CA bundle; null: the system's"
    )
    client_id: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="null: linewatch-<line>-<host>-<pid> (clean session)",
    )
    queue_max: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="messages kept while the broker is down or slow; then the oldest is dropped",
    )
    inflight_max: int = Field(
        default=100, ge=1, le=65_000, description="sent, not yet acknowledged, at most"
    )
    keepalive_s: int = Field(
        default=30, ge=5, le=3600, description="a silent broker is noticed within 1.5 x this"
    )
    reconnect_min_s: float = Field(
        default=0.5, gt=0, le=60, description="reconnect backoff starts here and doubles ..."
    )
    reconnect_max_s: float = Field(default=30.0, gt=0, le=3600, description="... up to this")
    status_every_s: float = Field(
        default=10.0, gt=0, le=3600, description="each camera's retained status is sent this often"
    )

    @field_validator("url")
    @classmethod
    def _mqtt_scheme(cls, url: str | None) -> str | None:
        if url is None:
            return None
        match = _SCHEME.match(url)
        if not match or match[1].lower() not in MQTT_SCHEMES:
            raise ValueError("expected mqtt://[user:password@]host[:port] or mqtts://...")
        return url


class PubSubSettings(Strict):
    """Redis pub/sub channels the sink announces on (the dashboard's live feed)."""

    alerts_channel: str = Field(
        default=keys.ALERTS_CHANNEL, description="alert announcements (AlertMessage JSON)"
    )
    verdicts_channel: str = Field(
        default=keys.VERDICTS_CHANNEL, description="every part's verdict (OK too), PartVerdict JSON"
    )


MOVED_OUTPUT_KEYS = {f"mqtt_{key}": f"outputs.mqtt.{key}" for key in MqttSettings.model_fields}


class OutputsSettings(Strict):
    """Where alerts and part verdicts go besides SQL: a webhook, an MQTT broker, Redis
    pub/sub."""

    webhook: WebhookSettings = Field(
        default=WebhookSettings(), description="alerts to an HTTP receiver"
    )
    mqtt: MqttSettings = Field(
        default=MqttSettings(), description="verdicts and camera status to an MQTT broker"
    )
    pubsub: PubSubSettings = Field(
        default=PubSubSettings(), description="Redis pub/sub channels (the dashboard's feed)"
    )

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            _raise_moved("outputs", data, MOVED_OUTPUT_KEYS)
        return data


REMOVED_WHY = (
    "every NG part is announced once, and the line alarm's open_rate / close_rate "
    "hysteresis keeps it from flapping"
)
MOVED_ALERT_KEYS = {
    "channel": "outputs.pubsub.alerts_channel",
    "verdict_channel": "outputs.pubsub.verdicts_channel",
    "webhook_url": "outputs.webhook.url",
    "webhook_secret": "outputs.webhook.secret",
    "webhook_timeout_s": "outputs.webhook.timeout_s",
    "line": "verdict.line_alarm",
    "k": "verdict.line_alarm.run (NG parts in a row that open the line alarm)",
    "n": "verdict.line_alarm.n (the parts the line alarm's NG rate is taken over)",
    "m": "verdict.line_alarm.close_rate (the NG rate over the last n parts that closes it)",
    "cooldown_s": "",  # removed: see REMOVED_WHY
}


def _raise_moved(section: str, data: Mapping[str, Any], moved: Mapping[str, str]) -> None:
    """ValueError naming each key of `data` that `moved` lists, and where it went."""
    given = [key for key in data if key in moved]
    if given:
        raise ValueError(
            "; ".join(
                f"{section}.{key} moved to {moved[key]}"
                if moved[key]
                else f"{section}.{key} is removed: {REMOVED_WHY}"
                for key in given
            )
            + " (configuration by concern: see `linewatch config example`)"
        )


class RedisSettings(Strict):
    """Redis through Sentinel: the sentinels find the current primary of `service` and
    every client follows a promotion (the other way is `redis_url`, one server)."""

    sentinels: tuple[str, ...] = Field(
        min_length=1,
        description='"host:port" of each sentinel',
        examples=[("10.0.0.11:26379", "10.0.0.12:26379", "10.0.0.13:26379")],
    )
    service: str = Field(
        default="linewatch",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="the monitored primary's name",
    )
    password: SecretStr | None = Field(
        default=None, description="the primary's and replicas' requirepass"
    )
    sentinel_password: SecretStr | None = Field(
        default=None, description="the sentinels' requirepass"
    )
    wait_replicas: int = Field(
        default=1,
        ge=0,
        le=16,
        description="WAIT for this many replicas after ingest's batch (0: off)",
    )
    wait_timeout_ms: int = Field(default=500, ge=1, le=60_000, description="WAIT's timeout")
    socket_timeout_s: float = Field(
        default=5.0, gt=0, le=300, description="a Redis call that takes longer fails"
    )

    @field_validator("sentinels")
    @classmethod
    def _host_ports(cls, sentinels: tuple[str, ...]) -> tuple[str, ...]:
        for sentinel in sentinels:
            host, _, port = sentinel.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port, got {sentinel!r}")
        return sentinels

    def addresses(self) -> list[tuple[str, int]]:
        """The sentinels as (host, port) pairs."""
        return [(s.rpartition(":")[0], int(s.rpartition(":")[2])) for s in self.sentinels]


class Settings(Strict):
    """A line: its cameras and the services and workers that inspect their parts."""

    line: str = Field(
        default="demo",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="the line's name: names its Redis streams (lw:frames:<line>, ...)",
        examples=["press-3"],
    )
    redis_url: str | None = Field(
        default=None,
        description="redis[s]://[:password@]host:port/db; null (and no redis:): `linewatch "
        "run` starts a private redis-server (address in <data_dir>/redis/address)",
    )
    redis: RedisSettings | None = Field(
        default=None, description="Redis Sentinel instead of redis_url (see Redis Sentinel)"
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL, e.g. postgresql+psycopg://user:pw@host/db; null: the "
        "SQLite file <data_dir>/linewatch.db",
    )
    data_dir: Path = Field(
        default=Path("linewatch-data"),
        description="the line's folder: SQLite, the embedded Redis, evidence",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Prometheus metrics port; `linewatch run` gives worker i port + i (0: off)",
    )
    cameras: tuple[CameraSettings, ...] = Field(default=(), description="the line's cameras")
    ingest: IngestSettings = Field(default=IngestSettings(), description=IngestSettings.__doc__)
    inference: InferenceSettings = Field(
        default=InferenceSettings(), description=InferenceSettings.__doc__
    )
    sink: SinkSettings = Field(default=SinkSettings(), description=SinkSettings.__doc__)
    supervisor: SupervisorSettings = Field(
        default=SupervisorSettings(), description=SupervisorSettings.__doc__
    )
    verdict: VerdictSettings = Field(default=VerdictSettings(), description=VerdictSettings.__doc__)
    outputs: OutputsSettings = Field(default=OutputsSettings(), description=OutputsSettings.__doc__)
    api: ApiSettings = Field(default=ApiSettings(), description=ApiSettings.__doc__)

    @model_validator(mode="before")
    @classmethod
    def _no_alerts_section(cls, data: Any) -> Any:
        """`alerts:` is gone: each of its keys is named with the place it moved to."""
        if isinstance(data, Mapping) and "alerts" in data:
            if isinstance(data["alerts"], Mapping):
                _raise_moved("alerts", data["alerts"], MOVED_ALERT_KEYS)
            raise ValueError(
                "alerts moved: its keys are now in outputs.webhook, outputs.pubsub and "
                "verdict.line_alarm (see `linewatch config example`)"
            )
        return data

    @model_validator(mode="after")
    def _one_redis(self) -> Settings:
        if self.redis_url and self.redis is not None:
            raise ValueError(
                "set either redis_url (one server) or redis.sentinels (Sentinel), not both"
            )
        return self

    @property
    def has_redis(self) -> bool:
        """Whether a Redis is configured (a URL or sentinels); else `run` embeds one."""
        return bool(self.redis_url) or self.redis is not None

    @property
    def frames_stream(self) -> str:
        return keys.frames_stream(self.line)

    @property
    def results_stream(self) -> str:
        return keys.results_stream(self.line)

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

    @property
    def mqtt_topic(self) -> str:
        """Prefix of every MQTT topic: outputs.mqtt.topic, by default `linewatch/<line>`."""
        return self.outputs.mqtt.topic or f"linewatch/{self.line}"

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
        key = ".".join(_without_parts_method(error["loc"]))
        if error["type"] == "extra_forbidden":
            problem = f"unknown key '{key}'"
        else:
            problem = f"'{key}': {error['msg']}" if key else str(error["msg"])
        origin = next(
            (
                var
                for prefix, var in env_vars.items()
                if (key and key.startswith(prefix)) or f"{prefix} " in problem
            ),
            None,
        )
        problems.append(f"{problem} (from environment variable {origin})" if origin else problem)
    return "; ".join(problems)


def _without_parts_method(loc: tuple[int | str, ...]) -> list[str]:
    """An error's key path without the method pydantic adds after `parts` (the tag of
    the union): cameras.0.parts.min_area, not cameras.0.parts.contrast.min_area."""
    path = [str(part) for part in loc]
    return [
        part
        for index, part in enumerate(path)
        if not (index and path[index - 1] == "parts" and part in PART_METHODS)
    ]
