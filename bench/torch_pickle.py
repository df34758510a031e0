"""Read a PyTorch checkpoint (``torch.save`` of a state dict) without torch.

Both on-disk formats are handled:

* legacy (torch < 1.6): five pickles/blobs back to back - magic number,
  protocol version, sys_info, the state dict (tensors refer to storages by
  persistent id), the list of storage keys - then for each key, in that order,
  an 8-byte element count followed by the raw elements;
* zip (torch >= 1.6): ``<archive>/data.pkl`` plus one raw file per storage,
  ``<archive>/data/<key>``.

A checkpoint is untrusted input, and what a hostile one can do is bounded:

* no code runs and no process state changes: unpickling hands out only the
  globals a state dict needs, behind wrappers that refuse BUILD; BUILD is
  accepted only as torch uses it, to set the state dict's ``_metadata``
  (module versions, dropped);
* memory stays within a small multiple of the file's size, and time grows
  linearly with it: every pickle is walked before it is unpickled
  (``numpy_pickle.check_opcodes``: lengths, memo indices, nesting depth); zip
  members are read only up to their declared size, and only while all of them
  together fit in MAX_EXPANSION times the file; a storage must hold exactly
  the elements its persistent id declares; the returned arrays together must
  fit in MAX_EXPANSION times the file too (stride-0 and overlapping views are
  legal but cannot multiply memory past that);
* every tensor lies inside its storage.

Whatever is refused raises ``ValueError`` naming the file.
"""
from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np

from .numpy_pickle import Global, Inert, Restricted

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Returned arrays, and zip members read, each at most this many times the file's bytes: float16
# widened to float32 doubles a tensor, and views sharing one storage are each copied.
MAX_EXPANSION = 8

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


class _Storage(Inert):
    """Placeholder for a storage whose bytes come after (or beside) the pickle."""

    def __init__(self, key: str, dtype: np.dtype, numel: int, offset: int = 0):
        self.key, self.dtype, self.numel, self.offset = key, dtype, numel, offset


class _Tensor(Inert):
    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


class _StateDict(dict):
    """What ``collections.OrderedDict`` stands for (a dict keeps order too): torch.save BUILDs the state dict's
    ``_metadata`` onto it."""

    def __setstate__(self, state):
        # Anything else would land in the instance dict, where it could shadow a method such as `items`.
        if not (isinstance(state, dict) and set(state) <= {"_metadata"}):
            raise pickle.UnpicklingError("unexpected state for an OrderedDict")


def _count(x) -> bool:
    return type(x) is int and x >= 0


def _counts(x) -> bool:
    return type(x) is tuple and all(map(_count, x))


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_ignored):
    # requires_grad, backward hooks and (torch >= 2) metadata do not matter for weights.
    if not (isinstance(storage, _Storage) and _count(storage_offset) and _counts(size) and _counts(stride)
            and len(size) == len(stride)):
        raise pickle.UnpicklingError("malformed tensor")
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *_ignored):
    return data


_ALLOWED = {
    ("collections", "OrderedDict"): _StateDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    # A storage class stands for its name only: it is looked up in persistent ids, never called.
    **{("torch", name): name for name in _STORAGE_DTYPES},
}


class _Unpickler(Restricted):
    allowed = _ALLOWED

    def __init__(self, file, storages: dict[str, _Storage]):
        super().__init__(file)
        self.storages = storages

    def persistent_load(self, pid):
        if not (type(pid) is tuple and len(pid) in (5, 6) and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id (a {type(pid).__name__})")
        _, storage_type, key, _location, numel, *view = pid
        if not (isinstance(storage_type, Global) and storage_type.target in _STORAGE_DTYPES):
            raise pickle.UnpicklingError("unsupported storage type")
        if not (type(key) is str and _count(numel)):
            raise pickle.UnpicklingError("malformed storage key or size")
        dtype = np.dtype(_STORAGE_DTYPES[storage_type.target])
        root = self.storages.setdefault(key, _Storage(key, dtype, numel))
        if not view or view[0] is None:
            return root
        # Legacy files may share one root storage between several views.
        if not (type(view[0]) is tuple and len(view[0]) == 3 and all(map(_count, view[0][1:]))):
            raise pickle.UnpicklingError("malformed storage view")
        _view_key, offset, view_numel = view[0]
        return _Storage(key, root.dtype, view_numel, offset)


def _out_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if np.issubdtype(dtype, np.floating) else dtype.newbyteorder("=")


def _view(t: _Tensor, blobs: dict[str, np.ndarray]) -> np.ndarray:
    """A read-only view of the tensor's elements, checked to lie inside its storage; copies nothing."""
    if t.storage.key not in blobs:
        raise ValueError(f"storage {t.storage.key!r} has no data")
    flat = blobs[t.storage.key][t.storage.offset : t.storage.offset + t.storage.numel]
    # as_strided does no bounds checking: a bad offset/stride would read foreign memory.
    last = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride))
    if 0 not in t.size and last >= flat.size:
        raise ValueError(f"tensor reaches element {last:,} of a {flat.size:,}-element storage")
    return np.lib.stride_tricks.as_strided(
        flat[t.offset :], shape=t.size, strides=[s * flat.itemsize for s in t.stride], writeable=False)


def _load_legacy(data: bytes) -> tuple[object, dict[str, np.ndarray]]:
    f = io.BytesIO(data)
    if _Unpickler(f, {}).load() != _LEGACY_MAGIC:
        raise ValueError("no torch magic number at the start")
    if _Unpickler(f, {}).load() != _LEGACY_PROTOCOL:
        raise ValueError(f"legacy protocol version is not {_LEGACY_PROTOCOL}")
    sys_info = _Unpickler(f, {}).load()
    order = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"
    storages: dict[str, _Storage] = {}
    obj = _Unpickler(f, storages).load()
    keys = _Unpickler(f, {}).load()
    if not (type(keys) is list and all(type(k) is str for k in keys)):
        raise ValueError("the storage keys are not a list of strings")
    blobs = {}
    for key in keys:
        if key not in storages:
            raise ValueError(f"storage {key!r} is not referenced by any tensor")
        dtype = storages[key].dtype.newbyteorder(order)
        head = f.read(8)
        count, start = int.from_bytes(head, "little" if order == "<" else "big"), f.tell()
        if len(head) < 8 or count * dtype.itemsize > len(data) - start:
            raise ValueError(f"storage {key!r}: {count:,} elements declared, {len(data) - start:,} bytes left")
        if count != storages[key].numel:
            raise ValueError(f"storage {key!r} holds {count:,} elements, its tensors say {storages[key].numel:,}")
        blobs[key] = np.frombuffer(data, dtype, count, start)
        f.seek(start + count * dtype.itemsize)
    return obj, blobs


def _load_zip(path: Path, budget: int) -> tuple[object, dict[str, np.ndarray]]:
    def read(name: str, size: int | None = None) -> bytes:
        # Declared sizes are the attacker's, but ZipExtFile never returns more than it declared.
        nonlocal budget
        info = z.getinfo(name)
        if size is not None and info.file_size != size:
            raise ValueError(f"zip member {name!r} holds {info.file_size:,} bytes, not {size:,}")
        if info.file_size > budget:
            raise ValueError(f"zip member {name!r} unpacks to {info.file_size:,} bytes, past what is left of "
                             f"{MAX_EXPANSION} times the file's size")
        budget -= info.file_size
        with z.open(info) as m:
            return m.read(info.file_size)

    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ValueError("zip file without a single data.pkl")
        prefix = pkl[0][: -len("data.pkl")]
        storages: dict[str, _Storage] = {}
        obj = _Unpickler(io.BytesIO(read(pkl[0])), storages).load()
        order = "<"
        if f"{prefix}byteorder" in z.namelist() and read(f"{prefix}byteorder").strip() == b"big":
            order = ">"
        blobs = {k: np.frombuffer(read(f"{prefix}data/{k}", s.numel * s.dtype.itemsize), s.dtype.newbyteorder(order))
                 for k, s in storages.items()}
    return obj, blobs


def load_state_dict(path) -> dict[str, np.ndarray]:
    """Tensors of a ``torch.save``-d state dict, in file order, as numpy arrays.

    Floating tensors come back as float32; integer/bool ones (e.g. BatchNorm's
    ``num_batches_tracked``) keep their dtype, as a float32 step count would lose
    precision. Raises ``ValueError`` naming ``path`` if it is not such a file, or
    one past the bounds in the module docstring.
    """
    path = Path(path)
    budget = MAX_EXPANSION * path.stat().st_size  # a missing file stays a FileNotFoundError
    try:
        if zipfile.is_zipfile(path):
            obj, blobs = _load_zip(path, budget)
        else:
            obj, blobs = _load_legacy(path.read_bytes())
        if not isinstance(obj, dict):
            raise ValueError(f"top-level object is a {type(obj).__name__}, not a state dict")
        for name, t in obj.items():
            if type(name) is not str:  # its repr could be huge: say only what it is
                raise ValueError(f"a {type(name).__name__} where a tensor's name should be")
            if not isinstance(t, _Tensor):
                raise ValueError(f"entry {name[:80]!r} is not a tensor")
        views = {name: _view(t, blobs) for name, t in obj.items()}
        need = sum(v.size * _out_dtype(v.dtype).itemsize for v in views.values())
        if need > budget:
            raise ValueError(f"its tensors would take {need:,} bytes, more than {MAX_EXPANSION} times the file")
        return {name: np.array(v, dtype=_out_dtype(v.dtype), order="C") for name, v in views.items()}
    except Exception as e:  # garbage input can fail inside pickle in many ways; report them all alike
        reason = f"{type(e).__name__}: {e}"
        reason = reason if len(reason) <= 300 else reason[:300] + "…"
        raise ValueError(f"{path}: not a readable torch checkpoint ({reason})") from None
