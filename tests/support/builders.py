"""Builders of test inputs: settings, wire messages (frames, results, part views, part ends),
numbered frames, defect runs of a truth."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import yaml

from linewatch.pipeline.config import Settings, load_settings
from linewatch.pipeline.simulation.synthetic import NORMAL_LABEL
from linewatch.pipeline.video.codec import encode_image
from linewatch.schemas.messages import FrameMessage, PartEndMessage, PartView, ResultMessage

# The classifier's exact verdicts (`verdict.novelty_threshold`): the line model's gallery
# (its threshold chosen on the training tiles) calls a few generated moving-line parts
# `unknown`; the gallery on a line is tested in tests/test_gallery_line.py.
NO_UNKNOWN = 2.0

# Numbered test videos: each frame carries its number as BITS black/white stripes.
WIDTH, HEIGHT, BITS = 160, 120, 8


def make_settings(tmp_path: Path, line: str, redis_url: str, **overrides: object) -> Settings:
    data = {"line": line, "redis_url": redis_url, "data_dir": str(tmp_path), **overrides}
    return load_settings(environ={}, overrides=data)


def belt_line_config(
    tmp_path: Path,
    *,
    line: str,
    video: Path,
    database_url: str,
    camera: dict | None = None,
    **sections: object,
) -> Path:
    """`tmp_path/line.yaml` for `linewatch run` on one camera replaying `video` at its
    frame rate (the belt moves while a test injects faults), parts found by contrast;
    `camera` adds camera keys, `sections` add or replace top-level ones."""
    belt = {"id": "cam", "url": str(video), "realtime": True}
    belt["parts"] = {"method": "contrast", "merge_gap": 64}
    config = {
        "line": line,
        "database_url": database_url,
        "data_dir": str(tmp_path / "data"),
        "cameras": [{**belt, **(camera or {})}],
        "sink": {"block_ms": 100},
        **sections,
    }
    path = tmp_path / "line.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def defect_runs(truth: list[str]) -> list[tuple[int, int, str]]:
    """(first seq, last seq, label) of each run of defective frames; seq = frame index + 1."""
    runs: list[tuple[int, int, str]] = []
    for index, label in enumerate(truth):
        seq = index + 1
        if label == NORMAL_LABEL:
            continue
        if runs and runs[-1][1] == seq - 1 and runs[-1][2] == label:
            runs[-1] = (runs[-1][0], seq, label)
        else:
            runs.append((seq, seq, label))
    return runs


RESULT = ResultMessage(
    camera_id="cam-1",
    seq=7,
    pts=0.7,
    status="ok",
    model_name="m",
    model_version="v1",
    label="crack",
    score=0.9,
    topk=(("crack", 0.9), ("free", 0.1)),
    is_defect=True,
    capture_ts=1,
    ingest_ts=2,
    dequeue_ts=3,
    infer_start_ts=4,
    infer_end_ts=5,
    worker_id="w",
    evidence=b"jpg",
)


FRAME = FrameMessage(
    camera_id="cam-1",
    seq=7,
    pts=0.5,
    capture_ts=10,
    ingest_ts=11,
    width=4,
    height=2,
    encoding="jpeg",
    image=b"\xff\xd8bytes",
    live=True,
)


def read_number(image: np.ndarray) -> int:
    stripe = image.shape[1] // BITS
    means = [image[:, b * stripe + 3 : (b + 1) * stripe - 3].mean() for b in range(BITS)]
    return sum(1 << bit for bit, mean in enumerate(means) if mean > 128)


def numbered_frame(number: int) -> np.ndarray:
    """A frame whose number is written as 8 black/white stripes (survives H.264)."""
    image = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    stripe = WIDTH // BITS
    for bit in range(BITS):
        if number >> bit & 1:
            image[:, bit * stripe : (bit + 1) * stripe] = 255
    return image


def frame(seq: int) -> dict[bytes, bytes]:
    image = np.full((120, 160, 3), 128, np.uint8)
    now = time.time_ns()
    message = FrameMessage("cam", seq, seq / 10, now, now, 160, 120, "jpeg", b"", False)
    return FrameMessage(**{**message.__dict__, "image": encode_image(image, "jpeg")}).encode()


def result(seq: int, label: str = "free", version: str = "v1") -> ResultMessage:
    return ResultMessage(
        camera_id="cam",
        seq=seq,
        pts=seq / 10,
        status="ok",
        model_name="m",
        model_version=version,
        label=label,
        score=0.8,
        topk=((label, 0.8),),
        is_defect=label != "free",
        capture_ts=seq * 10**9,
        ingest_ts=0,
        dequeue_ts=0,
        infer_start_ts=0,
        infer_end_ts=0,
        worker_id="w",
    )


NS = 1_000_000_000


def view_result(
    part_id: int,
    view_index: int,
    seq: int,
    topk: tuple[tuple[str, float], ...],
    *,
    camera_id: str = "cam",
    status: str = "ok",
    version: str = "v1",
    capture_ts: int | None = None,
    evidence: bytes = b"",
    threshold: float = 0.5,
) -> ResultMessage:
    """The result of one part view, as an inference worker sends it (labels `free` normal)."""
    label, score = topk[0] if topk else ("", 0.0)
    defect = 1.0 - dict(topk).get("free", 0.0) >= threshold if status == "ok" else False
    box = PartView(part_id, view_index, 10 * view_index, 20, 10 * view_index + 100, 140)
    return ResultMessage(
        camera_id=camera_id,
        seq=seq,
        pts=seq / 10,
        status=status,
        model_name="m",
        model_version=version,
        label=label,
        score=score,
        topk=topk,
        is_defect=defect,
        capture_ts=capture_ts if capture_ts is not None else seq * NS,
        ingest_ts=0,
        dequeue_ts=0,
        infer_start_ts=0,
        infer_end_ts=0,
        worker_id="w",
        evidence=evidence if defect else b"",
        view=box,
    )


def part_end(
    part_id: int,
    views_sent: int,
    first_seq: int,
    last_seq: int,
    *,
    camera_id: str = "cam",
    ended_ts: int | None = None,
    reason: str = "left",
) -> PartEndMessage:
    """A part end as ingest adds it to the results stream (ended now unless given)."""
    return PartEndMessage(
        camera_id=camera_id,
        part_id=part_id,
        views_sent=views_sent,
        first_seq=first_seq,
        last_seq=last_seq,
        first_pts=first_seq / 10,
        last_pts=last_seq / 10,
        first_capture_ts=first_seq * NS,
        last_capture_ts=last_seq * NS,
        ended_ts=ended_ts if ended_ts is not None else time.time_ns(),
        reason=reason,
    )
