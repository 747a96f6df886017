"""The inference worker's batch handling with the real Paddle predictor and a real Redis."""

import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from linewatch.pipeline.config import DEFAULT_MODEL_DIR
from linewatch.pipeline.inference.classifier import Classifier, ModelInfo
from linewatch.pipeline.inference.prediction import predictions
from linewatch.pipeline.simulation.synthetic import make_tile
from linewatch.pipeline.streams import broker
from linewatch.pipeline.video.codec import encode_image
from linewatch.schemas.messages import FrameMessage, PartView, ResultMessage
from linewatch.workers.inference import GROUP, FrameBatchHandler
from tests.support.builders import make_settings
from tests.support.services import add_entries

INFO = ModelInfo("m", "v", ("crack", "free", "hole"), ("free",), 0.4, 2)


def test_postprocess_labels_threshold_and_nan() -> None:
    probs = np.array([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.3, 0.55, 0.15], [np.nan, 0, 0]])
    clean, crack, borderline, broken = predictions(probs, INFO)
    assert (clean.label, clean.is_defect) == ("free", False)
    assert (crack.label, crack.is_defect, crack.topk[1][0]) == ("crack", True, "free")
    assert (borderline.label, borderline.is_defect) == ("crack", True), "1 - 0.55 >= 0.4"
    assert broken is None


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    model = Classifier(DEFAULT_MODEL_DIR, threads=2, max_batch=8)
    model.warm_up()
    return model


def frame(seq: int, image: np.ndarray, live: bool = False, age_s: float = 0.0) -> FrameMessage:
    height, width = image.shape[:2]
    now = time.time_ns()
    return FrameMessage(
        "cam",
        seq,
        seq / 10,
        now - int(age_s * 1e9),
        now,
        width,
        height,
        "jpeg",
        encode_image(image, "jpeg"),
        live,
    )


def test_batch_results_statuses_and_acks(
    classifier, redis_client, redis_url, line_name, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, line_name, redis_url, inference={"freshness_s": 1.0})
    rng = np.random.default_rng(3)
    tile = np.repeat(make_tile(rng, "free", 224)[..., None], 3, axis=2)
    bad_bytes = FrameMessage(**{**frame(3, tile).__dict__, "image": b"\xff\xd8 not a jpeg"})
    entries = [
        frame(1, tile).encode(),
        frame(2, tile, live=True, age_s=5.0).encode(),
        bad_bytes.encode(),
        {b"v": b"1", b"camera_id": b"cam"},
    ]
    broker.ensure_group(redis_client, settings.frames_stream, GROUP)
    add_entries(redis_client, settings.frames_stream, entries)
    delivered = broker.read_group(redis_client, settings.frames_stream, GROUP, "w1", 10, None)
    handler = FrameBatchHandler(redis_client, classifier, settings, "w1")
    handler.handle(delivered)

    results = [ResultMessage.decode(f) for _, f in redis_client.xrange(settings.results_stream)]
    assert [(r.seq, r.status) for r in results] == [(1, "ok"), (2, "stale"), (3, "undecodable")]
    assert results[0].label in classifier.info.labels and results[0].topk
    assert results[0].model_version == classifier.info.version
    assert results[0].dequeue_ts <= results[0].infer_start_ts <= results[0].infer_end_ts
    assert broker.backlog(redis_client, settings.frames_stream) == 0, "acked and deleted"
    dead = redis_client.xrange(settings.dead_letter_stream)
    assert len(dead) == 1 and b"missing field" in dead[0][1][b"reason"]
    stats = redis_client.hgetall(settings.stats_key)
    assert {k: int(v) for k, v in stats.items()} == {
        b"inferred": 1,
        b"stale": 1,
        b"undecodable": 1,
        b"dead_letters": 1,
    }


def test_model_folder_errors_name_the_problem(tmp_path: Path) -> None:
    from linewatch.pipeline.errors import ModelError

    with pytest.raises(ModelError, match="does not exist"):
        Classifier(tmp_path / "none")
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("inference.yml", "inference.pdmodel"):
        (folder / name).write_bytes((DEFAULT_MODEL_DIR / name).read_bytes())
    with pytest.raises(ModelError, match="missing inference.pdiparams"):
        Classifier(folder)
    (folder / "inference.pdiparams").write_bytes(
        (DEFAULT_MODEL_DIR / "inference.pdiparams").read_bytes()
    )
    config = (folder / "inference.yml").read_text().replace("- uneven\n", "- uneven\n  - extra\n")
    (folder / "inference.yml").write_text(config)
    with pytest.raises(ModelError, match="does not match 7 labels"):
        Classifier(folder)


def test_one_passed_part_in_n_keeps_its_crop(
    classifier, redis_client, redis_url, line_name, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """`inference.passed_crops_every`: every view of a sampled part carries its crop,
    whatever its verdict; the other parts keep a crop only where a view is flagged."""
    rng = np.random.default_rng(5)
    tile = np.repeat(make_tile(rng, "free", 224)[..., None], 3, axis=2)
    frames = [
        replace(frame(seq, tile), view=PartView(part, view, 0, 0, 224, 224))
        for seq, (part, view) in enumerate(((p, v) for p in range(1, 5) for v in range(2)), 1)
    ]

    def evidence(every: int) -> dict[tuple[int, int], bool]:
        settings = make_settings(
            tmp_path, f"{line_name}{every}", redis_url, inference={"passed_crops_every": every}
        )
        broker.ensure_group(redis_client, settings.frames_stream, GROUP)
        add_entries(redis_client, settings.frames_stream, [f.encode() for f in frames])
        delivered = broker.read_group(redis_client, settings.frames_stream, GROUP, "w1", 10, None)
        FrameBatchHandler(redis_client, classifier, settings, "w1").handle(delivered)
        kept = {}
        for _, fields in redis_client.xrange(settings.results_stream):
            result = ResultMessage.decode(fields)
            assert result.view is not None
            kept[(result.view.part_id, result.view.view_index)] = bool(result.evidence)
        return kept

    flagged_only, sampled = evidence(0), evidence(2)
    assert len(sampled) == 8 and not all(flagged_only.values()), "some views pass unflagged"
    for (part, view), kept in sampled.items():
        assert kept == (part % 2 == 0 or flagged_only[(part, view)]), (part, view)
