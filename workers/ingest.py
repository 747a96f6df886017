"""Ingest worker: decode cameras and files and push their frames to the frames stream.

One process ingests several cameras (`ingest.cameras_per_process`), one thread each:
PyAV and OpenCV release the GIL while they decode, convert, crop and encode, so the
threads share the process's cores; each camera keeps its own seq / part_id counters,
counters hash and state machine, and a dead or reconnecting camera waits in its own
thread without holding up the others.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2

from linewatch.pipeline import defaults, keys, metrics
from linewatch.pipeline.config import CameraSettings, Settings, TrackedParts
from linewatch.pipeline.errors import ConfigError, LinewatchError, ModelError
from linewatch.pipeline.inference.classifier import CONFIG_FILE, read_model_info
from linewatch.pipeline.inference.switching import running_model_dir
from linewatch.pipeline.redact import redact_url
from linewatch.pipeline.retry import Backoff
from linewatch.pipeline.runtime import StopFlag, run_worker
from linewatch.pipeline.streams import broker, preview_store
from linewatch.pipeline.video.camera_state import CameraState, CameraStateMachine, redis_recorder
from linewatch.pipeline.video.codec import encode_image
from linewatch.pipeline.video.parts import (
    FrameViews,
    ModelView,
    Pick,
    Selection,
    make_frame_views,
    part_end_message,
)
from linewatch.pipeline.video.preview import Preview, PreviewSampler
from linewatch.pipeline.video.read_ahead import read_ahead
from linewatch.pipeline.video.source import (
    DecodedFrame,
    SourceError,
    SourceOptions,
    SourceStalled,
    is_live,
    open_frames,
)
from linewatch.pipeline.video.tracking import PartRecord
from linewatch.schemas.messages import FrameMessage

log = logging.getLogger(__name__)

CHECK_EVERY_S = 0.25  # how stale the backlog check and the counters in Redis may be


@dataclass
class IngestCounters:
    decoded: int = 0
    sent: int = 0  # part views (in frame mode one per frame)
    dropped: int = 0
    parts: int = 0  # part ends sent


class NumberCounter:
    """Numbers from a per-camera Redis counter (`seq`, `part_id`): monotonic, and never
    repeated by this process even when Redis restarts without persistence."""

    def __init__(self, client: broker.Client, key: str, what: str) -> None:
        self.client = client
        self.key = key
        self.what = what
        self.last = 0

    def take(self, count: int, wait: Callable[[float], bool]) -> int:
        """The first of `count` new numbers; Redis outages are waited out."""

        def reserve() -> int:
            return broker.reserve_numbers(self.client, self.key, count, self.last)

        self.last = broker.with_retry(reserve, wait, f"{self.what} reservation")
        return self.last - count + 1


class FrameSender:
    """Turns decoded frames into stream entries with per-camera seq numbers: one entry per
    part view plus a part-end entry when a part leaves (frame mode: one of each per frame)."""

    def __init__(
        self,
        client: broker.Client,
        camera: CameraSettings,
        settings: Settings,
        live: bool,
        views: FrameViews,
    ) -> None:
        self.client = client
        self.camera = camera
        self.settings = settings
        self.live = live
        self.views = views
        self.counters = IngestCounters()
        self.seqs = NumberCounter(client, settings.camera_key(camera.id, keys.SEQ), "seq")
        ingest = settings.ingest
        self.previews = PreviewSampler(fps=ingest.preview_fps, width=ingest.preview_width)
        self.preview: Preview | None = None
        self._backlog_checked = self._recorded = -CHECK_EVERY_S
        self._over_limit = False
        # a file runs faster than real time: its parts wait for their views (not a live
        # deadline); only views lost on the way make them reach file_wait_s
        verdict = settings.verdict
        live_wait_ns, file_wait_ns = verdict.deadline_ms * 10**6, int(verdict.file_wait_s * 1e9)
        self._verdict_wait_ns = live_wait_ns if live else file_wait_ns

    def send(self, frames: list[DecodedFrame], stop: StopFlag) -> None:
        """Send frames (or their part views); Redis outages are waited out (a resend is
        deduplicated by seq). Part ends are sent even while a live camera sheds views."""
        if not frames:
            return
        selection = self.views.select(frames)
        self._keep_preview(frames[-1])
        retry = lambda call, what: broker.with_retry(call, stop.wait, what)  # noqa: E731
        if self.live and retry(self._over_live_limit, "backlog check"):
            self.counters.dropped += len(selection.picks)
            metrics.INGEST_FRAMES.labels(self.camera.id, "dropped").inc(len(selection.picks))
            self._send(Selection([], self.views.shed(selection)), stop)
            return
        if not self.live:
            retry(lambda: self._wait_below_watermark(stop), "backlog check")
        self._send(selection, stop)

    def finish(self, reason: str, stop: StopFlag) -> None:
        """End the open parts (the stream ended or dropped): they keep the views sent. The
        live view keeps the last frame, marked stopped."""
        self._send(Selection([], self.views.finish(reason)), stop)
        if self.preview is not None:
            self._store_preview(replace(self.preview, stopped=True))

    def _keep_preview(self, frame: DecodedFrame) -> None:
        preview = self.previews.take(frame.image, self.views.visible(), frame.capture_ts)
        if preview is not None:
            self.preview = preview
            self._store_preview(preview)

    def _store_preview(self, preview: Preview) -> None:
        """Best effort: a live view lost in a Redis outage is replaced by the next one."""
        key = self.settings.camera_key(self.camera.id, keys.PREVIEW)
        try:
            preview_store.put(
                self.client, key, preview.encode(), self.settings.ingest.preview_ttl_s
            )
        except broker.RedisError as exc:
            log.debug("live view not stored: %s", exc)

    def _send(self, selection: Selection, stop: StopFlag) -> None:
        picks, ended = selection.picks, selection.ended
        first_seq = self.seqs.take(len(picks), stop.wait) if picks else 0
        entries = [self._message(pick, first_seq + i).encode() for i, pick in enumerate(picks)]
        ends = [self._part_end(record) for record in ended]
        if entries or ends:
            batches = [
                (self.settings.frames_stream, entries, self.settings.ingest.max_stream_len),
                (self.settings.results_stream, ends, None),
            ]
            broker.with_retry(
                lambda: broker.add_to_streams(self.client, batches, self.settings.redis),
                stop.wait,
                "XADD",
            )
        self.counters.sent += len(picks)
        self.counters.parts += len(ended)
        metrics.INGEST_FRAMES.labels(self.camera.id, "sent").inc(len(picks))
        metrics.mark_alive()

    def _part_end(self, record: PartRecord) -> dict[bytes, bytes]:
        metrics.PARTS_ENDED.labels(self.camera.id, record.reason).inc()
        parts = self.camera.parts
        if record.reason == "stuck" and isinstance(parts, TrackedParts):  # tracked parts only
            log.warning(
                "camera %s: part %d in view for over %.0f s (parts.max_part_s): stuck on the "
                "belt? It is ended as `stuck` with %d views",
                self.camera.id,
                record.part_id,
                parts.max_part_s,
                record.views_sent,
            )
        return part_end_message(self.camera.id, record, self._verdict_wait_ns).encode()

    def _message(self, pick: Pick, seq: int) -> FrameMessage:
        image = self.views.image(pick)
        height, width = image.shape[:2]
        frame = pick.frame
        return FrameMessage(
            camera_id=self.camera.id,
            seq=seq,
            pts=frame.pts,
            capture_ts=frame.capture_ts,
            ingest_ts=time.time_ns(),
            width=width,
            height=height,
            encoding=self.camera.encoding,
            image=encode_image(image, self.camera.encoding, self.camera.jpeg_quality),
            live=self.live,
            view=pick.sent_as(seq),
        )

    def _over_live_limit(self) -> bool:
        """Live frames are shed (and counted) once the backlog reaches half the stream bound,
        so MAXLEN trimming only ever removes entries that were already done. The backlog is
        read at most every CHECK_EVERY_S (a round trip per frame costs many cameras dear)."""
        now = time.monotonic()
        if now - self._backlog_checked >= CHECK_EVERY_S:
            limit = self.settings.ingest.max_stream_len // 2
            self._over_limit = broker.backlog(self.client, self.settings.frames_stream) >= limit
            self._backlog_checked = now
        return self._over_limit

    def _wait_below_watermark(self, stop: StopFlag) -> None:
        watermark = self.settings.ingest.high_watermark
        while broker.backlog(self.client, self.settings.frames_stream) > watermark:
            if stop.wait(0.02):
                return

    def record(self, stop: StopFlag, done: bool = False, force: bool = False) -> None:
        """Write this camera's counters (read by `linewatch run` and status tools); between
        batches at most every CHECK_EVERY_S; always when forced, `done` or stopping."""
        now = time.monotonic()
        due = force or done or stop.is_set() or now - self._recorded >= CHECK_EVERY_S
        if not due:
            return
        self._recorded = now
        key = self.settings.camera_key(self.camera.id, keys.INGEST)
        mapping = {
            "decoded": self.counters.decoded,
            "sent": self.counters.sent,
            "dropped": self.counters.dropped,
            "parts": self.counters.parts,
            "done": int(done),
        }
        broker.with_retry(lambda: self.client.hset(key, mapping=mapping), stop.wait, "counters")


def pump(
    frames: Iterable[DecodedFrame],
    sender: FrameSender,
    batch_size: int,
    stop: StopFlag,
    on_batch: Callable[[IngestCounters], None] | None = None,
) -> None:
    """Send frames in batches of `batch_size` until the source ends or stop is set."""
    batch: list[DecodedFrame] = []
    decoded = metrics.INGEST_FRAMES.labels(sender.camera.id, "decoded")
    for frame in frames:
        sender.counters.decoded += 1
        decoded.inc()
        batch.append(frame)
        if len(batch) >= batch_size:
            sender.send(batch, stop)
            sender.record(stop)
            if on_batch:
                on_batch(sender.counters)
            batch = []
        if stop.is_set():
            break
    sender.send(batch, stop)


def is_camera_live(camera: CameraSettings) -> bool:
    """Live frames may be shed and go stale; file frames never are."""
    if camera.live is not None:
        return camera.live
    return is_live(camera.url) or camera.realtime


def paced(frames: Iterable[DecodedFrame]) -> Iterator[DecodedFrame]:
    """Release frames at their pts rate, stamped with the time they are released."""
    start: float | None = None
    for frame in frames:
        if start is None:
            start = time.monotonic() - frame.pts
        delay = start + frame.pts - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        yield replace(frame, capture_ts=time.time_ns())


def run(
    client: broker.Client,
    camera: CameraSettings,
    settings: Settings,
    stop: StopFlag,
    on_batch: Callable[[IngestCounters], None] | None = None,
) -> IngestCounters:
    """Ingest until the file ends, or until stopped for a live camera (reconnecting)."""
    live = is_camera_live(camera)
    options = SourceOptions.for_camera(camera, settings.ingest)
    views = frame_views(client, camera, settings, stop)
    sender = FrameSender(client, camera, settings, live, views)
    states = camera_states(client, camera, settings, stop)
    reason = "shutdown"
    try:
        if is_live(camera.url):
            _run_live(camera, options, sender, stop, settings.ingest.reconnect_max_s, states)
        else:
            states.enter(CameraState.CONNECTING, redact_url(camera.url))
            # a replay in real time waits for its frames anyway: nothing to decode ahead
            ahead = 0 if camera.realtime else settings.ingest.read_ahead
            frames = announced(read_ahead(open_frames(camera.url, options), ahead), states)
            if camera.realtime:
                frames = paced(frames)
            try:
                pump(frames, sender, 1 if live else settings.ingest.batch_size, stop, on_batch)
            finally:
                sender.finish("stream-ended", stop)
            if not stop.is_set():
                reason = "file read to its end"
        sender.record(stop, done=not is_live(camera.url) and not stop.is_set())
    except SourceError as exc:
        reason = str(exc)
        raise
    except broker.Interrupted as exc:
        log.warning("camera %s: %s; frames not yet sent are not accepted", camera.id, exc)
    finally:
        states.enter(CameraState.STOPPED, reason)
    log.info(
        "camera %s: decoded %d, sent %d, dropped %d",
        camera.id,
        sender.counters.decoded,
        sender.counters.sent,
        sender.counters.dropped,
    )
    return sender.counters


def frame_views(
    client: broker.Client, camera: CameraSettings, settings: Settings, stop: StopFlag
) -> FrameViews:
    """Part views (frame mode: one-view parts) at the running model's input size (read again
    after `linewatch model use`, see pipeline/video/parts.py) with part ids reserved in
    Redis like seq."""
    part_ids = NumberCounter(client, settings.camera_key(camera.id, keys.PART_ID), "part id")
    return make_frame_views(
        camera.parts,
        camera_id=camera.id,
        model_view=lambda: model_view(running_model_dir(client, settings), camera.id),
        new_part_ids=lambda count: part_ids.take(count, stop.wait),
    )


def model_view(model_dir: Path, camera_id: str) -> ModelView:
    """The size views are resized to and the model's crop margin, from its inference.yml
    (parsed again only when that file changes: each camera asks every MODEL_POLL_S, and
    a parse costs ~6 ms, ~0.09 of a core at 30 cameras)."""
    try:
        changed = (model_dir / CONFIG_FILE).stat().st_mtime_ns
    except OSError:
        changed = -1  # read_model_info names what is missing
    try:
        return _model_view(model_dir, changed)
    except ModelError as exc:
        raise ModelError(
            f"camera {camera_id}: parts mode resizes each view to the model's input size, "
            f"which cannot be read: {exc}"
        ) from exc


@functools.lru_cache(maxsize=8)
def _model_view(model_dir: Path, config_changed_ns: int) -> ModelView:
    info, preprocessor, _, _ = read_model_info(model_dir)
    return ModelView(preprocessor.view_size, info.crop_margin)


def _run_live(
    camera: CameraSettings,
    options: SourceOptions,
    sender: FrameSender,
    stop: StopFlag,
    reconnect_max_s: float,
    states: CameraStateMachine,
) -> None:
    backoff = Backoff(max_s=reconnect_max_s)
    while not stop.is_set():
        started = time.monotonic()
        states.enter(CameraState.CONNECTING, redact_url(camera.url))
        try:
            pump(announced(open_frames(camera.url, options), states), sender, 1, stop)
            problem = None
        except SourceError as exc:
            problem = exc
            sender.finish("stream-ended", stop)  # parts in view keep the views they have
        if time.monotonic() - started > defaults.HEALTHY_STREAM_S:
            backoff.reset()  # it streamed a while: this drop starts the waits over
        delay = backoff.next()
        if problem is not None:
            sender.record(stop, force=True)  # what was sent before the drop
            if isinstance(problem, SourceStalled):
                states.enter(CameraState.STALLED, str(problem))
            log.warning("camera %s: %s; reconnecting in %.1f s", camera.id, problem, delay)
            states.enter(CameraState.BACKOFF, f"{problem}; retry in {delay:.1f} s")
        stop.wait(delay)
    sender.finish("stream-ended", stop)


def announced(frames: Iterable[DecodedFrame], states: CameraStateMachine) -> Iterator[DecodedFrame]:
    """Pass frames through, entering `streaming` when the first one arrives."""
    for frame in frames:
        states.enter(CameraState.STREAMING)
        yield frame


def camera_states(
    client: broker.Client, camera: CameraSettings, settings: Settings, stop: StopFlag
) -> CameraStateMachine:
    recorder = redis_recorder(
        client,
        settings.camera_key(camera.id, keys.STATES),
        settings.camera_key(camera.id, keys.INGEST),
        stop.wait,
    )
    return CameraStateMachine(camera.id, [recorder])


def run_cameras(
    client: broker.Client, cameras: Sequence[CameraSettings], settings: Settings, stop: StopFlag
) -> dict[str, IngestCounters]:
    """Ingest `cameras` in one thread each until every file is read and every live camera
    is stopped. A camera that fails is logged at once and does not stop the others; once
    all threads are done, a LinewatchError names the cameras that failed."""
    results: dict[str, IngestCounters] = {}
    errors: dict[str, Exception] = {}
    threads = [
        threading.Thread(
            target=_camera_thread,
            kwargs=dict(
                client=client,
                camera=camera,
                settings=settings,
                stop=stop,
                results=results,
                errors=errors,
            ),
            name=f"ingest:{camera.id}",  # the logs' `camera` field (pipeline/runtime.py)
            daemon=True,
        )
        for camera in cameras
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.5)  # a timed join keeps the main thread free for signals
    if errors:
        raise LinewatchError(f"camera {', '.join(errors)} stopped on an error (logged above)")
    return results


def _camera_thread(
    *,
    client: broker.Client,
    camera: CameraSettings,
    settings: Settings,
    stop: StopFlag,
    results: dict[str, IngestCounters],
    errors: dict[str, Exception],
) -> None:
    """One camera: a user error ends it (logged, raised by run_cameras at the end); an
    unexpected one restarts a live camera after a backoff, as a crashed process would be,
    and ends a file (never read twice)."""
    backoff = Backoff(first_s=defaults.RESTART_FIRST_S, max_s=settings.ingest.reconnect_max_s)
    while True:
        try:
            results[camera.id] = run(client, camera, settings, stop)
            return
        except LinewatchError as exc:
            log.error("camera %s: %s", camera.id, exc)
            errors[camera.id] = exc
            return
        except Exception as exc:
            if not is_live(camera.url):
                log.exception("camera %s: ingest failed", camera.id)
                errors[camera.id] = exc
                return
            delay = backoff.next()
            log.exception("camera %s: ingest failed; restarting it in %.0f s", camera.id, delay)
            if stop.wait(delay):
                return


def main(settings: Settings, camera_ids: str, debug: bool = False, metrics_port: int = 0) -> None:
    """Process entry point (spawned by `linewatch run` or called by `linewatch worker
    ingest`): the cameras of `camera_ids`, comma-separated, one thread each."""
    ids = [name for name in camera_ids.split(",") if name]
    # One thread per camera already uses the cores; OpenCV's own pool would add threads
    # that spin after every resize and JPEG encode (the live view's cost doubled with it).
    cv2.setNumThreads(1)

    def body(stop: StopFlag) -> None:
        cameras = [find_camera(settings, camera_id) for camera_id in ids]
        client = broker.connect_to(settings, "ingest worker", attempts=20)
        for camera in cameras:
            log.info("camera %s: ingesting %s", camera.id, redact_url(camera.url))
        run_cameras(client, cameras, settings, stop)

    run_worker(f"ingest:{','.join(ids)}", debug, body, metrics_port)


def find_camera(settings: Settings, camera_id: str) -> CameraSettings:
    for camera in settings.cameras:
        if camera.id == camera_id:
            return camera
    known = ", ".join(c.id for c in settings.cameras) or "none configured"
    raise ConfigError(f"camera {camera_id!r} is not in the configuration (cameras: {known})")
