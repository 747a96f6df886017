"""Inference worker: batched classification or detection of frames from the frames stream."""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from linewatch.pipeline import metrics
from linewatch.pipeline.config import Settings
from linewatch.pipeline.errors import ConfigError
from linewatch.pipeline.inference.detector import Model, load_model
from linewatch.pipeline.inference.prediction import Prediction, predict
from linewatch.pipeline.inference.switching import ModelSwitcher, requested_model_dir
from linewatch.pipeline.runtime import StopFlag, run_worker
from linewatch.pipeline.streams import broker
from linewatch.pipeline.streams.batching import collect_batch
from linewatch.pipeline.streams.consumer import ConsumerLoop, decode_entries
from linewatch.pipeline.video.codec import UndecodableImage, decode_image
from linewatch.schemas.messages import FrameMessage, ResultMessage

log = logging.getLogger(__name__)

GROUP = "infer"
NO_PREDICTION = Prediction(label="", score=0.0, topk=(), is_defect=False)


@dataclass
class InferenceCounters:
    inferred: int = 0
    stale: int = 0
    undecodable: int = 0
    dead_letters: int = 0
    batches: int = 0
    batch_sizes: list[int] = field(default_factory=list)


class FrameBatchHandler:
    """Analyses one batch of entries and commits results + acks in one transaction.
    `classifier` is the running model: a Classifier or a Detector."""

    def __init__(
        self,
        client: broker.Client,
        classifier: Model,
        settings: Settings,
        worker_id: str,
        shadow: Model | None = None,
    ) -> None:
        self.client = client
        self.classifier = classifier
        self.shadow = shadow  # also run on every frame; its results never alert
        self.settings = settings
        self.worker_id = worker_id
        self.counters = InferenceCounters()

    def handle(self, entries: list[broker.Entry]) -> None:
        dequeue_ts = time.time_ns()
        pipe = broker.transaction(self.client)
        frames = decode_entries(
            entries,
            FrameMessage.decode,
            pipe,
            self.settings.frames_stream,
            self.settings.dead_letter_stream,
        )
        self.counters.dead_letters += len(entries) - len(frames)
        results = self._results(frames, dequeue_ts)
        broker.add_to(pipe, self.settings.results_stream, [r.encode() for r in results])
        broker.ack_and_delete(pipe, self.settings.frames_stream, GROUP, [e[0] for e in entries])
        counts = Counter(result.status for result in results if not result.shadow)
        for status, count in counts.items():
            metrics.FRAMES.labels("infer", status).inc(count)
        counts["inferred"] = counts.pop("ok", 0)
        self.counters.inferred += counts["inferred"]
        counts["dead_letters"] = len(entries) - len(frames)
        broker.add_counts(pipe, self.settings.stats_key, counts)
        pipe.execute()
        self.counters.batches += 1

    def _results(self, frames: list[FrameMessage], dequeue_ts: int) -> list[ResultMessage]:
        statuses, images = self._decode(frames, dequeue_ts)
        infer_start = time.time_ns()
        ok_images = [image for image in images if image is not None]
        ok_predictions = iter(predict(self.classifier, ok_images) if ok_images else ())
        infer_end = time.time_ns()
        if ok_images:
            metrics.BATCH_SIZE.observe(len(ok_images))
            metrics.INFERENCE_SECONDS.observe((infer_end - infer_start) / 1e9)
        results = []
        for frame, status in zip(frames, statuses, strict=True):
            prediction = next(ok_predictions) if status == "ok" else NO_PREDICTION
            if prediction is None:
                log.error(
                    "camera %s seq %d: the model returned NaN/inf scores",
                    frame.camera_id,
                    frame.seq,
                )
                status, prediction = "invalid-output", NO_PREDICTION
            evidence = frame.image if prediction.is_defect and frame.encoding == "jpeg" else b""
            results.append(
                self._result(
                    frame, status, prediction, dequeue_ts, infer_start, infer_end, evidence
                )
            )
        if self.shadow is not None and ok_images:
            ok_frames = [f for f, status in zip(frames, statuses, strict=True) if status == "ok"]
            results += self._shadow_results(self.shadow, ok_frames, ok_images, dequeue_ts)
        return results

    def _shadow_results(
        self, shadow: Model, frames: list[FrameMessage], images: list[np.ndarray], dequeue_ts: int
    ) -> list[ResultMessage]:
        infer_start = time.time_ns()
        shadow_predictions = predict(shadow, images)
        infer_end = time.time_ns()
        return [
            self._result(
                frame,
                "ok" if prediction is not None else "invalid-output",
                prediction or NO_PREDICTION,
                dequeue_ts,
                infer_start,
                infer_end,
                b"",
                shadow,
            )
            for frame, prediction in zip(frames, shadow_predictions, strict=True)
        ]

    def _decode(
        self, frames: list[FrameMessage], now: int
    ) -> tuple[list[str], list[np.ndarray | None]]:
        deadline_ns = int(self.settings.inference.freshness_s * 1e9)
        statuses: list[str] = []
        images: list[np.ndarray | None] = []
        for frame in frames:
            if frame.live and now - frame.capture_ts > deadline_ns:
                self.counters.stale += 1
                statuses.append("stale")
                images.append(None)
                continue
            try:
                images.append(decode_image(frame.image, frame.encoding, frame.width, frame.height))
                statuses.append("ok")
            except UndecodableImage as exc:
                self.counters.undecodable += 1
                log.warning("camera %s seq %d: %s", frame.camera_id, frame.seq, exc)
                statuses.append("undecodable")
                images.append(None)
        return statuses, images

    def _result(
        self,
        frame: FrameMessage,
        status: str,
        prediction: Prediction,
        dequeue_ts: int,
        infer_start: int,
        infer_end: int,
        evidence: bytes,
        shadow: Model | None = None,
    ) -> ResultMessage:
        info = (shadow or self.classifier).info
        return ResultMessage(
            camera_id=frame.camera_id,
            seq=frame.seq,
            pts=frame.pts,
            status=status,
            model_name=info.name,
            model_version=info.version,
            label=prediction.label,
            score=prediction.score,
            topk=prediction.topk,
            is_defect=prediction.is_defect,
            capture_ts=frame.capture_ts,
            ingest_ts=frame.ingest_ts,
            dequeue_ts=dequeue_ts,
            infer_start_ts=infer_start,
            infer_end_ts=infer_end,
            worker_id=self.worker_id,
            evidence=evidence,
            live=frame.live,
            boxes=prediction.boxes,
            shadow=shadow is not None,
        )


def run(
    client: broker.Client,
    classifier: Model,
    settings: Settings,
    worker_id: str,
    stop: StopFlag,
    load: Callable[[Path], Model] | None = None,
    shadow: Model | None = None,
) -> InferenceCounters:
    """Consume the frames stream until stopped; the in-flight batch always completes.
    With `load`, the worker follows `linewatch model use` (see pipeline/inference/switching.py)."""
    stream, inference = settings.frames_stream, settings.inference
    handler = FrameBatchHandler(client, classifier, settings, worker_id, shadow)
    requested = (lambda: requested_model_dir(client, settings)) if load else (lambda: None)
    switcher = ModelSwitcher(
        classifier,
        requested() or inference.model_dir,
        load or (lambda _: classifier),
        requested,
    )

    def follow_model() -> None:
        handler.classifier = switcher.current()

    def read_new() -> list[broker.Entry]:
        def read(count: int, block: int | None) -> list[broker.Entry]:
            return broker.read_group(client, stream, GROUP, worker_id, count, block)

        return collect_batch(read, inference.max_batch, inference.max_wait_ms, idle_block_ms=500)

    def handle(entries: list[broker.Entry]) -> bool:
        follow_model()
        handler.handle(entries)
        return True

    ConsumerLoop(
        client,
        stream,
        GROUP,
        worker_id,
        inference.max_batch,
        read_new,
        handle,
        settings.worker_key(worker_id),
        lambda: {
            "role": "infer",
            "inferred": handler.counters.inferred,
            "model": handler.classifier.info.version,
        },
        idle=follow_model,
    ).run(stop)
    c = handler.counters
    log.info(
        "worker %s: inferred %d, stale %d, undecodable %d, dead letters %d, batches %d",
        worker_id,
        c.inferred,
        c.stale,
        c.undecodable,
        c.dead_letters,
        c.batches,
    )
    return handler.counters


def default_worker_id(index: int = 0) -> str:
    return f"infer-{socket.gethostname()}-{index}"


def main(
    settings: Settings, worker_id: str | None = None, debug: bool = False, metrics_port: int = 0
) -> None:
    """Process entry point (spawned by `linewatch run` or called by `linewatch worker infer`)."""
    worker_id = worker_id or default_worker_id()

    def body(stop: StopFlag) -> None:
        if not settings.redis_url:
            raise ConfigError("inference worker needs redis_url (or LINEWATCH_REDIS_URL)")
        client = broker.connect(settings.redis_url, attempts=20)
        inference = settings.inference

        def load(model_dir: Path) -> Model:
            classifier = load_model(
                model_dir,
                inference.threads,
                inference.device,
                inference.tensorrt,
                inference.max_batch,
            )
            classifier.warm_up()
            return classifier

        classifier = load(requested_model_dir(client, settings) or inference.model_dir)
        stop.install()  # paddle replaces the SIGTERM handler when it loads
        log.info(
            "worker %s ready: model %s %s on %s, buckets %s",
            worker_id,
            classifier.info.name,
            classifier.info.version,
            classifier.device,
            classifier.buckets,
        )
        shadow = load(inference.shadow_model_dir) if inference.shadow_model_dir else None
        if shadow:
            log.info("shadow model %s %s", shadow.info.name, shadow.info.version)
        run(client, classifier, settings, worker_id, stop, load, shadow)

    run_worker(worker_id, debug, body, metrics_port)
