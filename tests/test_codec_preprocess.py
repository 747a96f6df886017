from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from linewatch.pipeline.inference.predictor import batch_buckets
from linewatch.pipeline.inference.preprocess import Preprocessor
from linewatch.pipeline.video.codec import UndecodableImage, decode_image, encode_image

MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "linewatch-tile"
RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 255, (48, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding", ["png", "raw-u8"])
def test_lossless_encodings_round_trip(encoding: str) -> None:
    data = encode_image(IMAGE, encoding)
    assert np.array_equal(decode_image(data, encoding, 64, 48), IMAGE)


def test_jpeg_round_trip_keeps_colour_order() -> None:
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 200
    decoded = decode_image(encode_image(red, "jpeg", 95), "jpeg", 32, 32)
    assert decoded[..., 0].mean() > 180 and decoded[..., 2].mean() < 20


@pytest.mark.parametrize(
    ("data", "encoding", "size", "reason"),
    [
        (b"\x00garbage", "jpeg", (64, 48), "do not decode"),
        (encode_image(IMAGE, "png"), "png", (32, 32), "announced 32x32"),
        (b"\x00" * 10, "raw-u8", (64, 48), "expected 64x48x3"),
    ],
)
def test_undecodable_bytes_are_named(data: bytes, encoding: str, size, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UndecodableImage, match=reason):
        decode_image(data, encoding, *size)


def test_preprocess_matches_the_paddleclas_recipe() -> None:
    ops = [
        {"DecodeImage": {"to_rgb": True}},
        {"ResizeImage": {"resize_short": 40}},
        {"CropImage": {"size": 32}},
        {"NormalizeImage": {"scale": "1./255.", "mean": [0.5, 0.5, 0.5], "std": [0.25] * 3}},
        {"ToCHWImage": None},
    ]
    batch = Preprocessor.from_ops(ops).batch([IMAGE, IMAGE[:, ::-1]])
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.float32
    resized = __import__("cv2").resize(IMAGE, (53, 40))
    crop = resized[4:36, 10:42].astype(np.float32)
    expected = ((crop / 255 - 0.5) / 0.25).transpose(2, 0, 1)
    assert np.allclose(batch[0], expected, atol=1e-5)


def test_unknown_op_is_named() -> None:
    with pytest.raises(ValueError, match="RandomErasing"):
        Preprocessor.from_ops([{"RandomErasing": {}}])


def test_batch_buckets() -> None:
    assert batch_buckets(32) == [1, 2, 4, 8, 16, 32]
    assert batch_buckets(12) == [1, 2, 4, 8, 12]
    assert batch_buckets(1) == [1]


@pytest.mark.parametrize("encoding", ["jpeg", "png"])
def test_decode_gives_what_cv2_bgr_decode_plus_conversion_gives(encoding: str) -> None:
    data = encode_image(IMAGE, encoding)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    expected = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    assert np.array_equal(decode_image(data, encoding, 64, 48), expected)


def test_batch_matches_a_straightforward_computation_for_the_shipped_model() -> None:
    config = yaml.safe_load((MODEL_DIR / "inference.yml").read_text())
    pre = Preprocessor.from_ops(config["PreProcess"]["transform_ops"])
    images = [IMAGE, RNG.integers(0, 255, (360, 640, 3), dtype=np.uint8), IMAGE[::-1]]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    resize = next(
        op["ResizeImage"] for op in config["PreProcess"]["transform_ops"] if "ResizeImage" in op
    )
    size = tuple(resize["size"])  # the shipped model's input (160 x 160)
    expected = [
        (cv2.resize(rgb, size, interpolation=cv2.INTER_AREA) / 255 - mean) / std for rgb in images
    ]
    batch = pre.batch(images)
    assert batch.dtype == np.float32 and batch.flags.c_contiguous
    assert np.allclose(batch, np.stack(expected).transpose(0, 3, 1, 2), atol=1e-5)
