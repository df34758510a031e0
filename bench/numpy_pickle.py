"""Read a pickle of plain data and numpy arrays (the CIFAR python batches) without running what it names.

A local dataset file is untrusted: plain `pickle.load` runs any callable the file names (a crafted
`data_batch_1` ran a shell command). This reader admits dicts, lists, tuples, bytes, strings, numbers and
numeric numpy arrays, and nothing else. numpy's own reconstructors are not handed out either: a BUILD opcode
on a shared `np.dtype` would change it for the whole process (torch_pickle.py avoids the same trap), so the
pickle builds inert stand-ins here, checked and turned into arrays only after loading. Globals are handed out
behind a `Global` that no BUILD can change, and `check_opcodes` walks each pickle first: it bounds what the C
unpickler allocates and how deep anything nests (torch_pickle.py reads checkpoints through the same base).
"""
from __future__ import annotations

import io
import pickle
import pickletools

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


class Inert:
    """Something a BUILD opcode must not change: the unpickler calls `__setstate__` when there is one,
    and would otherwise update `__dict__` and setattr() the slot state it is given."""

    __slots__ = ()

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"refusing to set state on a {type(self).__name__.lstrip('_')}")


class Global(Inert):
    """What find_class hands out: a call-through to `target`. Handing out a function or class itself would
    let BUILD rewrite it (its `__defaults__`, say) for the whole process."""

    __slots__ = ("target",)

    def __init__(self, target):
        self.target = target

    def __call__(self, *args):
        return self.target(*args)


class _FromBuffer(Inert):
    """numpy's protocol-5 form, `_frombuffer(buffer, dtype, shape, order)`."""

    def __init__(self, raw, dtype, shape, order):
        self.value = _array(raw, dtype, shape, order if order in ("C", "F") else "C")

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


MAX_DEPTH = 64
_IN_PLACE = {"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"}


def check_opcodes(file) -> None:
    """Walk the pickle at `file`'s position through its STOP, building nothing; raise on what would hurt.

    The C unpickler trusts a pickle's numbers. A memo index sizes (and zeroes) its memo table, so ten bytes
    can ask for gigabytes: indices must come in order, as every pickler writes them. Hashing a tuple nested
    a million deep, as a dict key, overflows the C stack (a crash, not an exception): nothing may nest deeper
    than MAX_DEPTH. genops also checks every length against the bytes present, so no opcode makes the
    unpickler allocate more than the pickle holds.
    """
    stack, marks, memo = [], [], {}  # stack and memo hold [depth] cells, shared so that in-place updates show
    for op, arg, _pos in pickletools.genops(file):
        if op.name == "MARK":
            marks.append(len(stack))
        elif op.name in ("PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"):
            index = len(memo) if op.name == "MEMOIZE" else arg
            if index > len(memo) or not stack:
                raise pickle.UnpicklingError(f"memo index {index} out of order, or nothing to store")
            memo[index] = stack[-1]
        elif op.name in ("GET", "BINGET", "LONG_BINGET"):
            if arg not in memo:
                raise pickle.UnpicklingError(f"memo index {arg} not set")
            stack.append(memo[arg])
        else:
            before = op.stack_before
            if pickletools.markobject in before:
                if not marks:
                    raise pickle.UnpicklingError(f"{op.name} without a MARK")
                cut = marks.pop() - before.index(pickletools.markobject)
            else:
                cut = len(stack) - len(before)
            if cut < (marks[-1] if marks else 0):
                raise pickle.UnpicklingError(f"{op.name} on too short a stack")
            taken = stack[cut:]
            del stack[cut:]
            if op.name in _IN_PLACE:
                taken[0][0] = max([taken[0][0]] + [1 + cell[0] for cell in taken[1:]])
                pushed = [taken[0]]
            else:
                pushed = [[1 + max((cell[0] for cell in taken), default=0)] for _ in op.stack_after]
            if pushed and pushed[0][0] > MAX_DEPTH:
                raise pickle.UnpicklingError(f"nested deeper than {MAX_DEPTH}")
            stack += pushed


class Restricted(pickle.Unpickler):
    """An unpickler that hands out only the globals of `allowed` ((module, name) -> what stands for it), each
    behind a `Global`, and loads only what `check_opcodes` passes (so `file` must be seekable)."""

    allowed: dict = {}

    def __init__(self, file, **kwargs):
        super().__init__(file, **kwargs)
        self.file = file

    def find_class(self, module, name):
        try:
            return Global(self.allowed[(module, name)])
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}") from None

    def load(self):
        start = self.file.tell()
        check_opcodes(self.file)
        self.file.seek(start)
        return super().load()


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
