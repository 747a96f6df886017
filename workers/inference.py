"""Inference worker: batched classification or detection of frames from the frames stream."""

from __future__ import annotations

import logging
import socket
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from linewatch.pipeline import metrics
from linewatch.pipeline.config import InferenceSettings, Settings
from linewatch.pipeline.gallery.search import Matches
from linewatch.pipeline.inference.gallery import GalleryFollower, LineGallery, read_revision
from linewatch.pipeline.inference.loading import Model, load_model
from linewatch.pipeline.inference.prediction import Prediction, predict, predict_with_embeddings
from linewatch.pipeline.inference.switching import ModelSwitcher, running_model_dir
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


class FrameBatchHandler:
    """Analyses one batch of entries and commits results + acks in one transaction.
    `model` is the running model (a Classifier or a Detector); with a `switcher` it
    follows `linewatch model use` between batches. With a `gallery` follower, the views
    of a model folder (`model_dir`) that has a gallery are searched in it
    (pipeline/inference/gallery.py)."""

    def __init__(
        self,
        client: broker.Client,
        model: Model,
        settings: Settings,
        worker_id: str,
        shadow: Model | None = None,
        switcher: ModelSwitcher[Model] | None = None,
        *,
        gallery: GalleryFollower | None = None,
        model_dir: Path | None = None,
    ) -> None:
        self.client = client
        self.model = model
        self.shadow = shadow  # also run on every frame; its results never alert
        self.settings = settings
        self.worker_id = worker_id
        self.switcher = switcher
        self.gallery = gallery
        self.model_dir = model_dir
        self.counters = InferenceCounters()

    def follow_model(self) -> None:
        """Take the requested model once it is loaded (between batches)."""
        if self.switcher is not None:
            self.model = self.switcher.current()
            self.model_dir = self.switcher.model_dir

    def running_gallery(self) -> LineGallery | None:
        """The running model's gallery, reloaded when `linewatch gallery add` bumped it."""
        if self.gallery is None or self.model_dir is None:
            return None
        return self.gallery.current(self.model_dir, self.model.info)

    def status(self) -> dict[str, str | int]:
        """This worker's heartbeat fields (`linewatch status`, `linewatch model show`)."""
        return {
            "role": "infer",
            "inferred": self.counters.inferred,
            "model": self.model.info.version,
        }

    def handle(self, entries: list[broker.Entry]) -> bool:
        """Infer one batch; True: done (the consumer loop goes on)."""
        self.follow_model()
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
        return True

    def _results(self, frames: list[FrameMessage], dequeue_ts: int) -> list[ResultMessage]:
        statuses, images = self._decode(frames, dequeue_ts)
        gallery = self.running_gallery()
        infer_start = time.time_ns()
        ok_images = [image for image in images if image is not None]
        predicted, matches = self._infer(ok_images, gallery)
        infer_end = time.time_ns()
        if ok_images:
            metrics.BATCH_SIZE.observe(len(ok_images))
            metrics.INFERENCE_SECONDS.observe((infer_end - infer_start) / 1e9)
        ok_predictions, ok_matches = iter(predicted), iter(matches)
        results = []
        for frame, status in zip(frames, statuses, strict=True):
            prediction = next(ok_predictions) if status == "ok" else NO_PREDICTION
            match = next(ok_matches) if status == "ok" else None
            if prediction is None:
                log.error(
                    "camera %s seq %d: the model returned NaN/inf scores",
                    frame.camera_id,
                    frame.seq,
                )
                status, prediction, match = "invalid-output", NO_PREDICTION, None
            kept = prediction.is_defect or self._flagged(gallery, match) or self._sampled(frame)
            evidence = frame.image if kept and frame.encoding == "jpeg" else b""
            result = self._result(
                frame, status, prediction, dequeue_ts, infer_start, infer_end, evidence
            )
            if match is not None:
                result = replace(result, novelty=match[0], gallery_label=match[1])
            results.append(result)
        if self.shadow is not None and ok_images:
            ok_frames = [f for f, status in zip(frames, statuses, strict=True) if status == "ok"]
            results += self._shadow_results(self.shadow, ok_frames, ok_images, dequeue_ts)
        return results

    def _infer(
        self, images: list[np.ndarray], gallery: LineGallery | None
    ) -> tuple[list[Prediction | None], list[tuple[float, str] | None]]:
        """Predictions and, with a gallery, each view's (novelty, gallery label)."""
        if not images:
            return [], []
        if gallery is None:
            return predict(self.model, images), [None] * len(images)
        predicted, embeddings = predict_with_embeddings(self.model, images)
        if embeddings is None:
            log.error("model %s has a gallery but no embedding output", self.model.info.version)
            return predicted, [None] * len(images)
        return predicted, _pairs(gallery.search(embeddings))

    def _sampled(self, frame: FrameMessage) -> bool:
        """A view of a passed part whose crop is kept (inference.passed_crops_every): the
        choice is by part id, so every view of a sampled part carries its crop."""
        every = self.settings.inference.passed_crops_every
        return bool(every) and frame.view is not None and frame.view.part_id % every == 0

    def _flagged(self, gallery: LineGallery | None, match: tuple[float, str] | None) -> bool:
        if gallery is None or match is None:
            return False
        known, threshold = (*self.model.info.labels,), self.settings.verdict.novelty_threshold
        return gallery.flags(*match, known=known, threshold=threshold)

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
        info = (shadow or self.model).info
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
            view=frame.view,
        )


def _pairs(matches: Matches) -> list[tuple[float, str] | None]:
    return [
        (round(float(novelty), 6), label)
        for novelty, label in zip(matches.novelty, matches.labels, strict=True)
    ]


def run(
    client: broker.Client,
    model: Model,
    settings: Settings,
    worker_id: str,
    stop: StopFlag,
    load: Callable[[Path], Model] | None = None,
    shadow: Model | None = None,
) -> InferenceCounters:
    """Consume the frames stream until stopped; the in-flight batch always completes.
    With `load`, the worker follows `linewatch model use` (see pipeline/inference/switching.py).
    The running model's gallery, if it has one, follows `linewatch gallery add`."""
    model_dir = running_model_dir(client, settings)
    switcher = None
    if load is not None:
        switcher = ModelSwitcher(
            model=model,
            model_dir=model_dir,
            load=load,
            running=partial(running_model_dir, client, settings),
        )
    handler = FrameBatchHandler(
        client,
        model,
        settings,
        worker_id,
        shadow,
        switcher,
        gallery=GalleryFollower(partial(read_revision, client, settings)),
        model_dir=model_dir.resolve(),
    )
    ConsumerLoop(
        client=client,
        stream=settings.frames_stream,
        group=GROUP,
        consumer=worker_id,
        count=settings.inference.max_batch,
        read_new=partial(read_batch, client, settings, worker_id),
        handle=handler.handle,
        heartbeat_key=settings.worker_key(worker_id),
        status=handler.status,
        idle=handler.follow_model,
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


def read_batch(client: broker.Client, settings: Settings, worker_id: str) -> list[broker.Entry]:
    """New frames: wait for a first one, then fill the batch (pipeline/streams/batching.py)
    for `max_wait_ms`, or `file_max_wait_ms` when the first entries are all from files."""
    read = partial(broker.read_group, client, settings.frames_stream, GROUP, worker_id)
    inference = settings.inference

    def window_ms(first: list[broker.Entry]) -> int:
        if any(fields.get(b"live") == b"1" for _, fields in first):
            return inference.max_wait_ms
        return inference.file_max_wait_ms

    return collect_batch(
        read, inference.max_batch, inference.max_wait_ms, idle_block_ms=500, window_ms=window_ms
    )


def load_warm_model(inference: InferenceSettings, model_dir: Path) -> Model:
    """The model in `model_dir` loaded as the inference settings say, every batch shape warm."""
    model = load_model(
        model_dir,
        threads=inference.threads,
        device=inference.device,
        tensorrt=inference.tensorrt,
        max_batch=inference.max_batch,
    )
    model.warm_up()
    return model


def default_worker_id(index: int = 0) -> str:
    return f"infer-{socket.gethostname()}-{index}"


def main(
    settings: Settings, worker_id: str | None = None, debug: bool = False, metrics_port: int = 0
) -> None:
    """Process entry point (spawned by `linewatch run` or called by `linewatch worker infer`)."""
    worker_id = worker_id or default_worker_id()
    # The gallery search is a numpy matmul beside Paddle's own math threads: a multi-threaded
    # BLAS took 16 ms for a batch against 10,000 entries, one thread 1.4 ms.
    threadpool_limits(limits=1, user_api="blas")

    def body(stop: StopFlag) -> None:
        client = broker.connect_to(settings, "inference worker", attempts=20)
        inference = settings.inference
        load = partial(load_warm_model, settings.inference)
        model = load(running_model_dir(client, settings))
        stop.install()  # paddle replaces the SIGTERM handler when it loads
        log.info(
            "worker %s ready: model %s %s on %s, buckets %s",
            worker_id,
            model.info.name,
            model.info.version,
            model.device,
            model.buckets,
        )
        shadow = load(inference.shadow_model_dir) if inference.shadow_model_dir else None
        if shadow:
            log.info("shadow model %s %s", shadow.info.name, shadow.info.version)
        run(client, model, settings, worker_id, stop, load, shadow)

    run_worker(worker_id, debug, body, metrics_port)
