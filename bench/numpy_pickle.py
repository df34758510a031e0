"""Read a pickle of plain data and numpy arrays (the CIFAR python batches) without running what it names.

A local dataset file is untrusted: plain `pickle.load` runs any callable the file names (a crafted
`data_batch_1` ran a shell command). This reader admits dicts, lists, tuples, bytes, strings, numbers and
numeric numpy arrays, and nothing else. numpy's own reconstructors are not handed out either: a BUILD opcode
on a shared `np.dtype` would change it for the whole process (torch_pickle.py avoids the same trap), so the
pickle builds inert stand-ins here, checked and turned into arrays only after loading.
"""
from __future__ import annotations

import io
import pickle

import numpy as np

# numeric kinds only: an object array's payload would be another pickle
DTYPES = {"u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8", "f2", "f4", "f8", "b1"}


class _DType:
    def __init__(self, name, *_ignored):
        if not isinstance(name, (str, bytes)) or (name.decode() if isinstance(name, bytes) else name) not in DTYPES:
            raise pickle.UnpicklingError(f"unsupported array type {name!r}")
        self.name = name.decode() if isinstance(name, bytes) else name
        self.order = "|"

    def __setstate__(self, state):
        if not (isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", ">", "|", "=")):
            raise pickle.UnpicklingError("malformed array type")
        self.order = state[1]

    def numpy(self) -> np.dtype:
        return np.dtype(self.name).newbyteorder("<" if self.order in "|=" else self.order)


class _Array:
    """What numpy's `_reconstruct` + BUILD produce: shape, type and raw bytes, checked against each other."""

    def __init__(self, *_ignored):
        self.state = None

    def __setstate__(self, state):
        self.state = state

    def numpy(self) -> np.ndarray:
        if not (isinstance(self.state, tuple) and len(self.state) == 5):
            raise pickle.UnpicklingError("malformed array")
        _version, shape, dtype, fortran, raw = self.state
        return _array(raw, dtype, shape, "F" if fortran else "C")


def _array(raw, dtype, shape, order) -> np.ndarray:
    if not isinstance(dtype, _DType) or not isinstance(raw, (bytes, bytearray)):
        raise pickle.UnpicklingError("an array must hold raw bytes of a numeric type")
    if not (isinstance(shape, tuple) and all(isinstance(n, int) and 0 <= n for n in shape)):
        raise pickle.UnpicklingError(f"malformed array shape {shape!r}")
    dt = dtype.numpy()
    if int(np.prod(shape, dtype=object)) * dt.itemsize != len(raw):
        raise pickle.UnpicklingError(f"array of shape {shape} does not match its {len(raw)} bytes")
    return np.frombuffer(bytes(raw), dt).reshape(shape, order=order)


class _FromBuffer:
    """numpy's protocol-5 form, `_frombuffer(buffer, dtype, shape, order)`."""

    def __init__(self, raw, dtype, shape, order):
        self.value = _array(raw, dtype, shape, order if order in ("C", "F") else "C")

    def __setstate__(self, state):
        raise pickle.UnpicklingError("unexpected state for an array")

    def numpy(self) -> np.ndarray:
        return self.value


def _latin1(text, encoding="utf-8"):
    """How Python 3 writes bytes into a protocol-2 pickle: `_codecs.encode(text, 'latin1')`."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("unexpected encode call")
    return text.encode("latin1")


_ALLOWED = {
    ("_codecs", "encode"): _latin1,
    **{(m, "_reconstruct"): _Array for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "_frombuffer"): _FromBuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): _Array,
    ("numpy", "dtype"): _DType,
}


class Restricted(pickle.Unpickler):
    """An unpickler that hands out only the globals of `allowed` ((module, name) -> what stands for it)."""

    allowed: dict = {}

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None


class _Unpickler(Restricted):
    allowed = _ALLOWED

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id")


def _plain(value, depth: int = 0):
    """The loaded value with stand-ins turned into arrays; anything else than plain data is refused."""
    if depth > 20:
        raise pickle.UnpicklingError("nested too deeply")
    if isinstance(value, (_Array, _FromBuffer)):
        return value.numpy()
    if isinstance(value, dict):
        return {_plain(k, depth + 1): _plain(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, depth + 1) for v in value)
    if value is None or isinstance(value, (bytes, str, int, float, bool)):
        return value
    raise pickle.UnpicklingError(f"unexpected {type(value).__name__} in the data")


def load(data: bytes):
    """The pickled value; pickle.UnpicklingError (or ValueError, EOFError) for anything but plain data."""
    return _plain(_Unpickler(io.BytesIO(data), encoding="bytes").load())
