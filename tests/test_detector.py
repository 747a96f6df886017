"""PaddleDetection- and PaddleClas-shaped model folders, built here with paddle.jit.save in
the legacy format, loaded by the real Paddle predictor, run through the inference worker
and the sink against a real Redis and real databases."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

import linewatch.pipeline.training  # noqa: F401  (legacy export format: set before paddle loads)
from linewatch.pipeline.errors import ModelError
from linewatch.pipeline.inference.classifier import Classifier
from linewatch.pipeline.inference.detector import Detector, DetectorInfo
from linewatch.pipeline.inference.loading import describe_model, load_model
from linewatch.pipeline.inference.prediction import CLEAN_LABEL, detections, predict
from linewatch.pipeline.storage import database as storage
from linewatch.pipeline.streams import broker
from linewatch.pipeline.video.codec import encode_image
from linewatch.schemas.messages import Box, FrameMessage, PartView, ResultMessage
from linewatch.schemas.tables import Alert, Detection, DetectionBox
from linewatch.workers import inference, sink
from tests.support.builders import make_settings, part_end
from tests.support.rows import frame_boxes
from tests.support.services import add_entries, run_sink_until

LABELS = ["crack", "scratch"]
INPUT_HW = (64, 96)
# Fixed boxes in input pixels (x1, y1, x2, y2), one per class.
BOXES_IN = [[8.0, 4.0, 40.0, 36.0], [48.0, 16.0, 88.0, 60.0]]
FRAME_WH = (240, 80)  # scale_factor = (64 / 80, 96 / 240) = (0.8, 0.4)
CRACK_BOX = (20.0, 5.0, 100.0, 45.0)
SCRATCH_BOX = (120.0, 20.0, 220.0, 75.0)


def tiny_layers() -> tuple[type, type]:
    """(TinyDetector, TinyClassifier): defined once paddle may be imported."""
    import paddle

    class TinyDetector(paddle.nn.Layer):
        """Two boxes per image, NMS-style outputs: class 0 scores the image's mean
        brightness, class 1 its complement; boxes go back to original pixels through
        scale_factor like a PaddleDetection export's."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 1, 1, bias_attr=False)
            self.conv.weight.set_value(paddle.full([1, 3, 1, 1], 1 / 3))
            self.register_buffer("boxes", paddle.to_tensor(BOXES_IN))
            self.register_buffer("classes", paddle.to_tensor([[0.0], [1.0]]))

        def forward(self, image, scale_factor, im_shape=None):  # type: ignore[no-untyped-def]
            bright = self.conv(image).mean(axis=[1, 2, 3])
            scores = paddle.stack([bright, 1 - bright], axis=1).unsqueeze(2)
            boxes = self.boxes.unsqueeze(0)
            if im_shape is not None:  # YOLO-style exports feed im_shape too: clip to it
                limit = paddle.concat([im_shape[:, 1:2], im_shape[:, 0:1]] * 2, axis=1)
                boxes = minimum(boxes, limit.unsqueeze(1))
            sy, sx = scale_factor[:, 0:1], scale_factor[:, 1:2]
            # a multiplication: legacy static mode swaps a division's operands when both
            # sides broadcast
            coords = boxes * (1 / paddle.concat([sx, sy, sx, sy], axis=1).unsqueeze(1))
            classes = self.classes.unsqueeze(0).expand([image.shape[0], 2, 1])
            out = paddle.concat([classes, scores, coords], axis=2).reshape([-1, 6])
            return out, paddle.full_like(bright, 2, dtype="int32")

    class TinyClassifier(paddle.nn.Layer):
        """Softmax over the three channel means: a red image is "red"."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = paddle.nn.Conv2D(3, 3, 1, bias_attr=False)
            self.conv.weight.set_value(paddle.eye(3).reshape([3, 3, 1, 1]) * 4)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return paddle.nn.functional.softmax(self.conv(x).mean(axis=[2, 3]), axis=1)

    return TinyDetector, TinyClassifier


def minimum(a, b):  # type: ignore[no-untyped-def]
    # paddle 3's minimum and abs have no legacy (non-PIR) static kernel path; relu has
    import paddle

    return a - paddle.nn.functional.relu(a - b)


def export(layer, specs: list, prefix: Path) -> None:  # type: ignore[no-untyped-def]
    import paddle

    layer.eval()
    paddle.jit.save(layer, str(prefix), input_spec=specs)
    prefix.with_name(prefix.name + ".pdiparams.info").unlink(missing_ok=True)
    assert prefix.with_suffix(".pdmodel").is_file(), "exported in the legacy program format"


def spec(shape: list, name: str):  # type: ignore[no-untyped-def]
    from paddle.static import InputSpec

    return InputSpec(shape, "float32", name)


def infer_cfg(arch: str, preprocess: list[dict]) -> dict:
    """infer_cfg.yml as PaddleDetection's export_utils writes it."""
    return {
        "mode": "paddle",
        "draw_threshold": 0.5,
        "metric": "COCO",
        "use_dynamic_shape": False,
        "arch": arch,
        "min_subgraph_size": 3,
        "Preprocess": preprocess,
        "label_list": LABELS,
    }


def resize_ops(stride: int = 0) -> list[dict]:
    ops = [
        {"interp": 2, "keep_ratio": False, "target_size": list(INPUT_HW), "type": "Resize"},
        {"is_scale": True, "mean": [0.0] * 3, "std": [1.0] * 3, "type": "NormalizeImage"},
        {"type": "Permute"},
    ]
    return ops + ([{"stride": stride, "type": "PadStride"}] if stride else [])


def detection_folder(root: Path, arch: str, with_im_shape: bool) -> Path:
    folder = root / arch
    folder.mkdir()
    specs = [spec([None, 3, *INPUT_HW], "image"), spec([None, 2], "scale_factor")]
    if with_im_shape:
        specs.append(spec([None, 2], "im_shape"))
    export(tiny_layers()[0](), specs, folder / "model")
    config = infer_cfg(arch, resize_ops(stride=32 if with_im_shape else 0))
    (folder / "infer_cfg.yml").write_text(yaml.safe_dump(config))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    return {
        "YOLO": detection_folder(root, "YOLO", with_im_shape=True),
        "PicoDet": detection_folder(root, "PicoDet", with_im_shape=False),
        "paddleclas": paddleclas_folder(root),
    }


@pytest.fixture(scope="module")
def detector(folders: dict[str, Path]) -> Detector:
    model = load_model(folders["YOLO"], threads=1, max_batch=4)
    assert isinstance(model, Detector)
    model.warm_up()
    return model


def grey(value: int, size: tuple[int, int] = FRAME_WH) -> np.ndarray:
    width, height = size
    return np.full((height, width, 3), value, np.uint8)


@pytest.mark.parametrize("kind", ["YOLO", "PicoDet"])
def test_boxes_come_back_in_frame_pixels(folders: dict[str, Path], kind: str) -> None:
    model = Detector(folders[kind], threads=1, max_batch=4)
    bright, dark, small = model.predict([grey(230), grey(25), grey(230, (48, 32))])
    assert bright[:, 0].tolist() == [0, 1]
    assert bright[:, 1] == pytest.approx([230 / 255, 1 - 230 / 255], abs=1e-4)
    assert bright[0, 2:] == pytest.approx(CRACK_BOX, abs=1e-3)
    assert dark[1, 2:] == pytest.approx(SCRATCH_BOX, abs=1e-3)
    # 48 x 32 frame: scale (2, 2); the scratch box (24, 8, 44, 30) is clipped to 48 x 32.
    assert small[1, 2:] == pytest.approx([24.0, 8.0, 44.0, 30.0], abs=1e-3)
    assert model.info.labels == tuple(LABELS) and model.info.arch == kind


def test_frames_through_the_worker_and_sink_land_as_boxes(
    detector, folders, database_url, tmp_path, redis_client, redis_url, line_name
) -> None:  # type: ignore[no-untyped-def]
    """Frame mode: each frame a one-view part; each NG part one alert of its box's class,
    and a run of NG parts the line alarm."""
    settings = make_settings(
        tmp_path,
        line_name,
        redis_url,
        database_url=database_url,
        inference={"model_dir": str(folders["YOLO"])},
        verdict={"line_alarm": {"n": 3, "open_rate": 1.0, "close_rate": 0.0, "run": 2}},
    )
    frames = [frame(seq, grey(value)) for seq, value in enumerate([230, 25, 230, 25], start=1)]
    broker.ensure_group(redis_client, settings.frames_stream, inference.GROUP)
    add_entries(redis_client, settings.frames_stream, [f.encode() for f in frames])
    delivered = broker.read_group(
        redis_client, settings.frames_stream, inference.GROUP, "w1", 10, None
    )
    inference.FrameBatchHandler(redis_client, detector, settings, "w1").handle(delivered)

    results = [ResultMessage.decode(f) for _, f in redis_client.xrange(settings.results_stream)]
    assert [(r.label, r.is_defect, len(r.boxes)) for r in results] == [
        ("crack", True, 1),
        ("scratch", True, 1),
        ("crack", True, 1),
        ("scratch", True, 1),
    ]
    engine = storage.open_database(database_url)
    stream = settings.results_stream
    ends = [part_end(seq, 1, seq, seq, reason="frame").encode() for seq in range(1, 5)]
    add_entries(redis_client, stream, ends)
    broker.ensure_group(redis_client, stream, sink.GROUP)
    run_sink_until(
        redis_client, engine, settings, "s", lambda: broker.backlog(redis_client, stream) == 0
    )

    version = detector.info.version
    (crack,) = frame_boxes(engine, "cam", 1, version)
    (scratch,) = frame_boxes(engine, "cam", 2, version)
    assert (crack.label, crack.score) == ("crack", pytest.approx(230 / 255, abs=1e-4))
    assert (crack.x1, crack.y1, crack.x2, crack.y2) == pytest.approx(CRACK_BOX, abs=1e-3)
    assert scratch.label == "scratch"
    assert (scratch.x1, scratch.y1, scratch.x2, scratch.y2) == pytest.approx(SCRATCH_BOX, abs=1e-3)
    with Session(engine) as session:
        alerts = session.execute(
            select(Alert.kind, Alert.label, Alert.opened_seq).order_by(Alert.opened_seq, Alert.id)
        ).all()
    assert alerts == [
        ("part", "crack", 1),
        ("part", "scratch", 2),
        ("line", "ng-rate", 2),
        ("part", "crack", 3),
        ("part", "scratch", 4),
    ], "every frame with a box is an NG part of that class; two in a row: the line alarm"

    inserted = storage.write_batch(engine, results, sink_ts=1)
    assert inserted == 0 and box_count(engine) == 4, "a replay writes no box twice"
    with Session(engine) as session, session.begin():
        session.execute(delete(Detection).where(Detection.seq <= 2))
    assert box_count(engine) == 2, "deleting (pruning) a frame deletes its boxes"
    engine.dispose()


def frame(seq: int, image: np.ndarray) -> FrameMessage:
    height, width = image.shape[:2]
    now = time.time_ns()
    return FrameMessage(
        "cam",
        seq,
        seq / 10,
        now,
        now,
        width,
        height,
        "png",
        encode_image(image, "png"),
        False,
        view=PartView(seq, 0, 0, 0, width, height),  # frame mode: a one-view part
    )


def box_count(engine) -> int:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return int(session.scalar(select(func.count()).select_from(DetectionBox)) or 0)


def test_duplicate_frames_in_one_batch_get_their_boxes_once(sqlite_url: str) -> None:
    result = ResultMessage(
        "cam", 1, 0.1, "ok", "m", "v", "crack", 0.9, (("crack", 0.9),), True, 1, 1, 1, 1, 1, "w"
    )
    boxed = dataclasses.replace(result, boxes=(Box("crack", 0.9, 1, 2, 3, 4),) * 2)
    engine = storage.open_database(sqlite_url)
    inserted = storage.write_batch(engine, [boxed, boxed], sink_ts=1)
    assert inserted == 1 and box_count(engine) == 2
    assert frame_boxes(engine, "cam", 1, "v")[1] == Box("crack", 0.9, 1, 2, 3, 4)
    engine.dispose()


INFO = DetectorInfo("d", "v", "YOLO", ("crack", "hole", "part"), ("part",), 0.3, 0.6, 3)


def test_detection_postprocess_threshold_normal_classes_and_nan() -> None:
    rows = np.array(
        [
            [2, 0.95, 0, 0, 10, 10],  # a normal class: never a defect
            [0, 0.5, 1, 1, 5, 5],  # kept (>= draw 0.3) but below the defect threshold 0.6
            [1, 0.7, 2, 2, 6, 6],  # the defect
            [1, 0.2, 3, 3, 7, 7],  # below the draw threshold: dropped
        ],
        np.float32,
    )
    hole, weak, clean, broken = detections(
        [rows, rows[[0, 1]], rows[3:], np.array([[0, np.nan, 0, 0, 1, 1]])], INFO
    )
    assert (hole.label, hole.score, hole.is_defect) == ("hole", pytest.approx(0.7), True)
    assert [b.label for b in hole.boxes] == ["part", "hole", "crack"], "best first"
    assert [label for label, _ in hole.topk] == ["part", "hole", "crack"]
    assert (weak.label, weak.is_defect, len(weak.boxes)) == ("part", False, 2)
    assert (clean.label, clean.is_defect, clean.boxes) == (CLEAN_LABEL, False, ())
    assert broken is None


def test_detection_folder_errors_name_the_file_and_what_to_do(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "det"
    shutil.copytree(folders["PicoDet"], folder)
    (folder / "infer_cfg.yml").unlink()
    with pytest.raises(ModelError, match="missing infer_cfg.yml; copy the complete folder .*"):
        load_model(folder)
    shutil.copy(folders["PicoDet"] / "infer_cfg.yml", folder)
    (folder / "model.pdiparams").unlink()
    with pytest.raises(ModelError, match="missing model.pdiparams;.*tools/export_model.py"):
        load_model(folder)
    shutil.copy(folders["PicoDet"] / "model.pdiparams", folder)

    config = yaml.safe_load((folder / "infer_cfg.yml").read_text())
    for change, reason in [
        ({"keep_ratio": True}, "keep_ratio: true"),
        ({"type": "LetterBoxResize"}, "unsupported preprocess op 'LetterBoxResize'"),
    ]:
        broken = {**config, "Preprocess": [{**config["Preprocess"][0], **change}]}
        (folder / "infer_cfg.yml").write_text(yaml.safe_dump(broken))
        with pytest.raises(ModelError, match=reason):
            describe_model(folder)
    with pytest.raises(ModelError, match="holds no model"):
        describe_model(tmp_path)


def test_a_classifier_exported_as_a_detector_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "det"
    folder.mkdir()
    export(tiny_layers()[1](), [spec([None, 3, *INPUT_HW], "image")], folder / "model")
    (folder / "infer_cfg.yml").write_text(yaml.safe_dump(infer_cfg("PicoDet", resize_ops())))
    with pytest.raises(ModelError, match="export it with NMS"):
        load_model(folder, threads=1)


# PaddleClas: inference.yml as ppcls/utils/config.py dump_infer_config writes it.
PADDLECLAS_YML = """\
Global:
  model_name: PP-LCNet_x0_25
PostProcess:
  Topk:
    label_list:
    - red
    - green
    - blue
    topk: 2
PreProcess:
  transform_ops:
  - ResizeImage:
      resize_short: 72
  - CropImage:
      size: 64
  - NormalizeImage:
      channel_num: 3
      mean: [0.5, 0.5, 0.5]
      order: ''
      scale: 0.00392156862745098
      std: [0.5, 0.5, 0.5]
  - ToCHWImage: null
"""


def paddleclas_folder(root: Path) -> Path:
    folder = root / "paddleclas"
    folder.mkdir()
    export(tiny_layers()[1](), [spec([None, 3, 64, 64], "x")], folder / "inference")
    (folder / "inference.yml").write_text(PADDLECLAS_YML)
    return folder


def test_paddleclas_export_folder_loads_and_classifies(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    model = load_model(folders["paddleclas"], threads=1, max_batch=2)
    assert isinstance(model, Classifier)
    assert (model.info.name, model.info.labels, model.info.topk) == (
        "PP-LCNet_x0_25",
        ("red", "green", "blue"),
        2,
    )
    assert model.preprocessor.output_size == (64, 64)
    red, blue = predict(model, [colour((255, 0, 0)), colour((0, 0, 255))])
    assert (red.label, blue.label) == ("red", "blue") and len(red.topk) == 2

    # PaddleClas's deploy config shape: flat Topk with a class_id_map_file.
    folder = tmp_path / "deploy"
    shutil.copytree(folders["paddleclas"], folder)
    config = yaml.safe_load(PADDLECLAS_YML)
    config["PostProcess"] = {
        "name": "Topk",
        "topk": 1,
        "class_id_map_file": "../ppcls/utils/colours_label_list.txt",
    }
    (folder / "inference.yml").write_text(yaml.safe_dump(config))
    (folder / "colours_label_list.txt").write_text("0 red\n1 green\n2 blue\n")
    assert describe_model(folder).labels == ("red", "green", "blue")


def colour(rgb: tuple[int, int, int]) -> np.ndarray:
    return np.tile(np.array(rgb, np.uint8), (80, 100, 1))


def test_a_model_expecting_another_input_shape_is_named(tmp_path: Path) -> None:
    import paddle

    class Greyscale(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.conv = paddle.nn.Conv2D(1, 3, 1)

        def forward(self, x):  # type: ignore[no-untyped-def]
            return paddle.nn.functional.softmax(self.conv(x).mean(axis=[2, 3]), axis=1)

    folder = tmp_path / "greyscale"
    folder.mkdir()
    export(Greyscale(), [spec([None, 1, 64, 64], "x")], folder / "inference")
    (folder / "inference.yml").write_text(PADDLECLAS_YML)
    with pytest.raises(
        ModelError,
        match=r"greyscale rejects a 1x3x64x64 input.*channels.*export the model for 3-channel",
    ):
        load_model(folder, threads=1, max_batch=2)
