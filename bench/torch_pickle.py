"""Read a PyTorch checkpoint (``torch.save`` of a state dict) without torch.

Both on-disk formats are handled:

* legacy (torch < 1.6): five pickles/blobs back to back - magic number,
  protocol version, sys_info, the state dict (tensors refer to storages by
  persistent id), the list of storage keys - then for each key, in that order,
  an 8-byte element count followed by the raw elements;
* zip (torch >= 1.6): ``<archive>/data.pkl`` plus one raw file per storage,
  ``<archive>/data/<key>``.

Unpickling is restricted to the handful of globals a state dict needs, so a
hostile file can at worst fail to load; it can never run code.
"""
from __future__ import annotations

import collections
import pickle
import zipfile
from pathlib import Path

import numpy as np

from .numpy_pickle import Restricted

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


class _Storage:
    """Placeholder for a storage whose bytes come after (or beside) the pickle."""

    def __init__(self, key: str, dtype: np.dtype, numel: int, offset: int = 0):
        self.key, self.dtype, self.numel, self.offset = key, dtype, numel, offset


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_ignored):
    # requires_grad, backward hooks and (torch >= 2) metadata do not matter for weights.
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    # A storage class stands for its name only: handing out np.dtype objects
    # would let a BUILD opcode call __setstate__ on numpy's shared descriptors.
    **{("torch", name): name for name in _STORAGE_DTYPES},
}


class _Unpickler(Restricted):
    allowed = _ALLOWED

    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel, *rest = pid
        if not isinstance(storage_type, str) or storage_type not in _STORAGE_DTYPES:
            raise pickle.UnpicklingError(f"unsupported storage type {storage_type!r}")
        dtype = np.dtype(_STORAGE_DTYPES[storage_type])
        root = self.storages.setdefault(key, _Storage(key, dtype, numel))
        view = rest[0] if rest else None
        if view is None:
            return root
        # Legacy files may share one root storage between several views.
        _view_key, offset, view_numel = view
        return _Storage(key, dtype, view_numel, offset)


def _materialise(t: _Tensor, blobs: dict[str, np.ndarray]) -> np.ndarray:
    flat = blobs[t.storage.key][t.storage.offset : t.storage.offset + t.storage.numel]
    if min(t.size + t.stride + (t.offset,), default=0) < 0:
        raise ValueError("negative size, stride or offset in a tensor")
    if 0 in t.size:
        return np.zeros(t.size, flat.dtype.newbyteorder("="))
    # as_strided does no bounds checking: a bad offset/stride would read foreign memory.
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
    if last >= flat.size:
        raise ValueError(f"tensor reaches element {last} of a {flat.size}-element storage")
    view = np.lib.stride_tricks.as_strided(
        flat[t.offset :], shape=t.size, strides=[s * flat.itemsize for s in t.stride], writeable=False
    )
    out = np.array(view, dtype=view.dtype.newbyteorder("="), order="C")  # a writable copy, native byte order
    return out.astype(np.float32, copy=False) if np.issubdtype(out.dtype, np.floating) else out


def _load_legacy(f) -> tuple[object, dict[str, np.ndarray]]:
    magic = _Unpickler(f, {}).load()
    if magic != _LEGACY_MAGIC:
        raise ValueError("no torch magic number at the start")
    protocol = _Unpickler(f, {}).load()
    if protocol != _LEGACY_PROTOCOL:
        raise ValueError(f"unsupported legacy protocol {protocol!r}")
    sys_info = _Unpickler(f, {}).load()
    order = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"
    storages: dict[str, _Storage] = {}
    obj = _Unpickler(f, storages).load()
    keys = _Unpickler(f, {}).load()
    blobs = {}
    for key in keys:
        if key not in storages:
            raise ValueError(f"storage {key!r} is not referenced by any tensor")
        dtype = storages[key].dtype.newbyteorder(order)
        count = int.from_bytes(f.read(8), "little" if order == "<" else "big")
        data = f.read(count * dtype.itemsize)
        if len(data) != count * dtype.itemsize:
            raise ValueError(f"truncated data for storage {key!r}")
        blobs[key] = np.frombuffer(data, dtype=dtype)
    return obj, blobs


def _load_zip(path) -> tuple[object, dict[str, np.ndarray]]:
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ValueError("zip file without a single data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        with z.open(pkl[0]) as f:
            obj = _Unpickler(f, storages).load()
        order = "<"
        if f"{prefix}byteorder" in z.namelist() and z.read(f"{prefix}byteorder").strip() == b"big":
            order = ">"
        blobs = {k: np.frombuffer(z.read(f"{prefix}data/{k}"), dtype=s.dtype.newbyteorder(order))
                 for k, s in storages.items()}
    return obj, blobs


def load_state_dict(path) -> dict[str, np.ndarray]:
    """Tensors of a ``torch.save``-d state dict, in file order, as numpy arrays.

    Floating tensors come back as float32; integer/bool ones (e.g. BatchNorm's
    ``num_batches_tracked``) keep their dtype, as a float32 step count would lose
    precision. Raises ``ValueError`` naming ``path`` if it is not such a file.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            obj, blobs = _load_zip(path)
        else:
            with open(path, "rb") as f:
                obj, blobs = _load_legacy(f)
        if not isinstance(obj, dict):
            raise ValueError(f"top-level object is a {type(obj).__name__}, not a state dict")
        bad = [name for name, t in obj.items() if not isinstance(t, _Tensor)]
        if bad:
            raise ValueError(f"entry {bad[0]!r} is not a tensor")
        return {name: _materialise(t, blobs) for name, t in obj.items()}
    except OSError:
        raise
    except Exception as e:  # garbage input can fail inside pickle in many ways; report them all alike
        raise ValueError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from e
