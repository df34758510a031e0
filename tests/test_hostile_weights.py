"""Hostile torch checkpoints: each is refused with a ValueError naming the file, quickly and in little memory.

The files are written opcode by opcode, without torch, so that each one is exactly the attack it names.
"""
import pickle
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import torch_pickle
from bench.errors import UserError
from bench.torch_pickle import load_state_dict
from conftest import ROOT, tlbench

# --- pickle fragments -------------------------------------------------------------------------


def _global(module: str, name: str) -> bytes:
    return f"c{module}\n{name}\n".encode()


def _str(text: str) -> bytes:
    raw = text.encode()
    return b"X" + len(raw).to_bytes(4, "little") + raw


def _int(n: int) -> bytes:
    return pickle.dumps(n, protocol=2)[2:-1]  # without PROTO and STOP


def _tuple(*items: bytes) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _storage(key: str, numel: int, storage_type: bytes = _global("torch", "FloatStorage")) -> bytes:
    return _tuple(_str("storage"), storage_type, _str(key), _str("cpu"), _int(numel)) + b"Q"


def _tensor(storage: bytes, offset: int, size, stride, build: bytes = b"") -> bytes:
    hooks = _global("collections", "OrderedDict") + b")R"
    args = _tuple(storage, _int(offset), _tuple(*map(_int, size)), _tuple(*map(_int, stride)), b"\x89", hooks)
    return _global("torch._utils", "_rebuild_tensor_v2") + args + b"R" + build


def _state(entries, build: bytes = b"", before: bytes = b"") -> bytes:
    """A protocol-2 state dict pickle of (name, tensor fragment) pairs, as torch.save writes it."""
    items = b"".join(_str(name) + tensor for name, tensor in entries)
    return b"\x80\x02" + before + _global("collections", "OrderedDict") + b")R(" + items + b"u" + build + b"."


# torch.save keeps the module versions as the state dict's instance attribute, so a BUILD of
# {"_metadata": OrderedDict([("", {"version": 1})])} follows its items.
METADATA = (b"}" + _str("_metadata") + _global("collections", "OrderedDict") + b")R"
            + _str("") + b"}" + _str("version") + _int(1) + b"s" + b"s" + b"s" + b"b")
DATA = np.arange(12, dtype=np.float32)
TENSORS = [("w", _tensor(_storage("0", 12), 0, (3, 4), (4, 1))), ("w_t", _tensor(_storage("0", 12), 0, (4, 3), (1, 4)))]


def _write(path, pkl: bytes, storages: dict, fmt: str):
    """A checkpoint with the state pickle `pkl` and raw storages {key: array}, in torch's zip or legacy layout."""
    if fmt == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", pkl)
            for key, a in storages.items():
                z.writestr(f"archive/data/{key}", a.tobytes())
    else:
        with open(path, "wb") as f:
            for head in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
                f.write(pickle.dumps(head, protocol=2))
            f.write(pkl + pickle.dumps(list(storages), protocol=2))
            for a in storages.values():
                f.write(a.size.to_bytes(8, "little") + a.tobytes())
    return path


def _refused(path, match: str) -> None:
    """load_state_dict refuses `path` within 2 s, with a ValueError that names the file and says `match`."""
    start = time.perf_counter()
    with pytest.raises(ValueError) as e:
        load_state_dict(path)
    assert time.perf_counter() - start < 2
    assert str(path) in str(e.value) and match in str(e.value), str(e.value)


@pytest.fixture(params=["zip", "legacy"])
def fmt(request):
    return request.param


# --- what must keep working ---------------------------------------------------------------------


def test_a_hand_written_checkpoint_with_metadata_and_shared_views_loads(tmp_path, fmt):
    got = load_state_dict(_write(tmp_path / "ok.pth", _state(TENSORS, build=METADATA), {"0": DATA}, fmt))
    assert list(got) == ["w", "w_t"]
    np.testing.assert_array_equal(got["w"], DATA.reshape(3, 4))
    np.testing.assert_array_equal(got["w_t"], DATA.reshape(3, 4).T)


# --- code execution -----------------------------------------------------------------------------


class _Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return subprocess.call, (["touch", str(self.marker)],)


def _attacks(marker):
    cmd = _str(f"touch {marker}")
    return {
        "os.system": _global("os", "system") + cmd + b"\x85R",
        "builtins.eval": _global("builtins", "eval") + _str(f"open({str(marker)!r}, 'w')") + b"\x85R",
        "posix.system": b"(" + cmd + b"iposix\nsystem\n",  # INST: find_class, then a call
        "os.popen": _str("os") + _str("popen") + b"\x93" + cmd + b"\x85R",  # STACK_GLOBAL (protocol 4)
        "subprocess.call": pickle.dumps(_Shell(marker), protocol=3)[2:-1],  # 2 would name Python 2's module
    }


@pytest.mark.parametrize("name", list(_attacks("x")))
def test_code_is_never_run(tmp_path, fmt, name):
    marker = tmp_path / "PWNED"
    pkl = _state([("w", _attacks(marker)[name])])
    _refused(_write(tmp_path / "evil.pth", pkl, {}, fmt), f"refusing to load global {name}")
    assert not marker.exists()


# --- process and object state -------------------------------------------------------------------


def test_build_on_an_allowed_global_is_refused_and_changes_nothing(tmp_path):
    real = torch_pickle._rebuild_tensor_v2
    slotstate = b"N}" + _str("__defaults__") + _tuple(_int(7)) + b"s\x86b0"  # (None, {...}): setattr
    dictstate = b"}" + _str("hacked") + _int(1) + b"sb0"  # a plain dict: __dict__.update
    for i, build in enumerate([slotstate, dictstate]):
        pkl = _state(TENSORS, before=_global("torch._utils", "_rebuild_tensor_v2") + build)
        _refused(_write(tmp_path / f"build{i}.pth", pkl, {"0": DATA}, "zip"), "refusing to set state on a Global")
    assert torch_pickle._rebuild_tensor_v2 is real
    assert real.__defaults__ is None and real.__dict__ == {}
    assert load_state_dict(_write(tmp_path / "ok.pth", _state(TENSORS), {"0": DATA}, "zip"))["w"].shape == (3, 4)


@pytest.mark.parametrize("build, match", [
    # an `items` in the instance dict would shadow dict.items, which the reader calls
    (b"}" + _str("items") + _global("collections", "OrderedDict") + b"sb", "unexpected state for an OrderedDict"),
    (b"N}" + _str("items") + _int(0) + b"s\x86b", "unexpected state for an OrderedDict"),
    (b"}(" + _str("_metadata") + b"N" + _str("keys") + b"Nub", "unexpected state for an OrderedDict"),
], ids=["items", "items-as-slot-state", "more-than-metadata"])
def test_state_on_the_state_dict_is_metadata_only(tmp_path, build, match):
    _refused(_write(tmp_path / "od.pth", _state(TENSORS, build=build), {"0": DATA}, "zip"), match)


@pytest.mark.parametrize("tensor, match", [
    (_tensor(_storage("0", 12), 0, (3, 4), (4, 1), build=b"}" + _str("size") + _tuple() + b"sb"),
     "refusing to set state on a Tensor"),
    (_tensor(_storage("0", 12) + b"}" + _str("numel") + _int(10**9) + b"sb", 0, (3,), (1,)),
     "refusing to set state on a Storage"),
], ids=["tensor", "storage"])
def test_state_on_tensors_and_storages_is_refused(tmp_path, tensor, match):
    _refused(_write(tmp_path / "t.pth", _state([("w", tensor)]), {"0": DATA}, "zip"), match)


# --- memory ---------------------------------------------------------------------------------------


def test_a_broadcast_view_of_terabytes_is_refused_before_allocating(tmp_path, fmt):
    pkl = _state([("w", _tensor(_storage("0", 12), 0, (10**6, 10**6), (0, 0)))])
    _refused(_write(tmp_path / "huge.pth", pkl, {"0": DATA}, fmt), "would take 4,000,000,000,000 bytes")


def test_overlapping_views_cannot_multiply_memory_past_the_cap(tmp_path, fmt):
    data = np.zeros(1000, np.float32)
    views = [(f"v{i}", _tensor(_storage("0", 1000), 0, (1000,), (1,))) for i in range(300)]
    _refused(_write(tmp_path / "views.pth", _state(views), {"0": data}, fmt), "more than 8 times the file")
    # a few views of one storage are legal, as in torch
    assert len(load_state_dict(_write(tmp_path / "ok.pth", _state(views[:4]), {"0": data}, fmt))) == 4


@pytest.mark.parametrize("offset, size, stride, match", [
    (10, (3,), (1,), "reaches element 12 of a 12-element storage"),
    (0, (3, 4), (5, 1), "reaches element 13 of a 12-element storage"),
    (0, (2**62, 2), (0, 2**62), "reaches element 4,611,686,018,427,387,904"),
    (0, (3,), (-1,), "malformed tensor"),
    (0, (3, 4), (1,), "malformed tensor"),
])
def test_a_tensor_outside_its_storage_is_refused(tmp_path, fmt, offset, size, stride, match):
    pkl = _state([("w", _tensor(_storage("0", 12), offset, size, stride))])
    _refused(_write(tmp_path / "oob.pth", pkl, {"0": DATA}, fmt), match)


def test_a_zip_bomb_is_refused_without_unpacking_it(tmp_path, monkeypatch):
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", _state([("w", _tensor(_storage("0", 12_500_000), 0, (12_500_000,), (1,)))]))
        z.writestr("archive/data/0", bytes(50_000_000))  # 50 MB of zeros, about 50 kB packed
    assert path.stat().st_size < 100_000
    opened, real_open = [], zipfile.ZipFile.open

    def open_member(z, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return real_open(z, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", open_member)
    _refused(path, "'archive/data/0' unpacks to 50,000,000 bytes, past what is left of 8 times the file's size")
    assert opened == ["archive/data.pkl"]  # the storage member was never opened


def test_a_zip_member_larger_than_its_storage_is_not_read(tmp_path):
    pkl = _state([("w", _tensor(_storage("0", 12), 0, (3,), (1,)))])
    _refused(_write(tmp_path / "big.pth", pkl, {"0": np.zeros(5000, np.float32)}, "zip"),
             "'archive/data/0' holds 20,000 bytes, not 48")


def test_a_packed_data_pkl_bomb_is_refused(tmp_path):
    path = tmp_path / "pklbomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02N" + b"0N" * 10_000_000 + b".")
    _refused(path, "'archive/data.pkl' unpacks to 20,000,004 bytes")


@pytest.mark.parametrize("count, match", [
    (2**62, "4,611,686,018,427,387,904 elements declared, 48 bytes left"),
    (11, "holds 11 elements, its tensors say 12"),
])
def test_a_legacy_element_count_must_fit_the_file_and_the_storage(tmp_path, count, match):
    path = _write(tmp_path / "count.pth", _state(TENSORS), {"0": DATA}, "legacy")
    raw = path.read_bytes()
    head = len(raw) - DATA.nbytes - 8
    path.write_bytes(raw[:head] + count.to_bytes(8, "little") + raw[head + 8 :])
    _refused(path, match)


# --- malformed files ------------------------------------------------------------------------------


def test_a_truncated_checkpoint_is_refused_wherever_it_is_cut(tmp_path, fmt):
    raw = _write(tmp_path / "whole.pth", _state(TENSORS, build=METADATA), {"0": DATA}, fmt).read_bytes()
    for cut in sorted({0, 1, 2, 15, 40, len(raw) // 3, len(raw) // 2, len(raw) - 49, len(raw) - 8, len(raw) - 1}):
        path = tmp_path / f"cut{cut}.pth"
        path.write_bytes(raw[:cut])
        _refused(path, "not a readable torch checkpoint")


@pytest.mark.parametrize("pkl, match", [
    (pickle.dumps([1, 2], protocol=2), "top-level object is a list, not a state dict"),
    (_state([("w", _int(3))]), "entry 'w' is not a tensor"),
    (b"\x80\x02}" + _tuple(_str("w")) + _tensor(_storage("0", 12), 0, (3,), (1,)) + b"s.", "a tuple where a tensor"),
    (_state([("w", _tensor(_tuple(_str("storage")) + b"Q", 0, (3,), (1,)))]), "unexpected persistent id (a tuple)"),
    (_state([("w", _tensor(_str("storage") + b"Q", 0, (3,), (1,)))]), "unexpected persistent id (a str)"),
    (_state([("w", _tensor(_storage("0", 12, _global("collections", "OrderedDict")), 0, (3,), (1,)))]),
     "unsupported storage type"),
    (_state([("w", _tensor(_storage("0", 12, _str("FloatStorage")), 0, (3,), (1,)))]), "unsupported storage type"),
    (_state([("w", _tensor(_storage("0", 12).replace(_str("0"), _int(0)), 0, (3,), (1,)))]),
     "malformed storage key or size"),
    (_state([("w", _tensor(_storage("0", -1), 0, (3,), (1,)))]), "malformed storage key or size"),
    (_state([("w", _tensor(_storage("0", 12)[:-2] + _str("view") + b"tQ", 0, (3,), (1,)))]),
     "malformed storage view"),
], ids=["list", "not-a-tensor", "tuple-key", "short-pid", "str-pid", "class-as-storage", "str-as-storage",
        "int-key", "negative-numel", "bad-view"])
def test_what_is_not_a_state_dict_of_tensors_is_refused(tmp_path, fmt, pkl, match):
    storages = {"0": DATA} if _str("storage") in pkl else {}  # a legacy file lists only the storages it uses
    _refused(_write(tmp_path / "odd.pth", pkl, storages, fmt), match)


def test_a_legacy_file_needs_the_magic_number(tmp_path):
    path = _write(tmp_path / "magic.pth", _state(TENSORS), {"0": DATA}, "legacy")
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    path.write_bytes(pickle.dumps(12345, protocol=2) + path.read_bytes()[len(magic) :])
    _refused(path, "no torch magic number at the start")


@pytest.mark.parametrize("pkl, match", [
    (b"\x80\x02}" + b")" + b"\x85" * 1_000_000 + b"Ns.", "nested deeper than 64"),  # hashing it overflows the C stack
    (b"\x80\x02" + b"]" * 100 + b"a" * 99 + b".", "nested deeper than 64"),
    (b"\x80\x02Nr\xff\xff\xff\x7f.", "memo index 2147483647 out of order"),  # the C unpickler would zero 32 GB
    (b"\x80\x02Nh\x05.", "memo index 5 not set"),
    (b"\x80\x02\x8e" + (2**40).to_bytes(8, "little") + b".", "expected 1099511627776 bytes"),  # BINBYTES8
], ids=["deep-tuple-key", "deep-list", "memo-index", "memo-get", "huge-length"])
def test_the_pickle_is_walked_before_it_is_unpickled(tmp_path, pkl, match):
    # In a child process: were the walk missing, these crash the interpreter or exhaust memory.
    path = tmp_path / "deep.pth"
    path.write_bytes(pkl)
    code = "import sys; from bench.torch_pickle import load_state_dict\ntry: load_state_dict(sys.argv[1])\n" \
           "except ValueError as e: print(e)"
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert match in out.stdout and str(path) in out.stdout, out.stdout


# --- fuzz -----------------------------------------------------------------------------------------


def _mutate(raw: bytes, edits) -> bytes:
    out = bytearray(raw)
    for pos, value in edits:
        out[pos] = value
    return bytes(out)


@pytest.fixture(scope="module")
def valid(tmp_path_factory):
    folder = tmp_path_factory.mktemp("valid")
    return {fmt: _write(folder / f"{fmt}.pth", _state(TENSORS, build=METADATA), {"0": DATA}, fmt).read_bytes()
            for fmt in ("zip", "legacy")}


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_fuzzed_files_load_or_raise_value_error(valid, tmp_path_factory, data):
    if data.draw(st.booleans(), label="random bytes"):
        raw = b"\x80\x02" + data.draw(st.binary(max_size=300))
    else:
        base = valid[data.draw(st.sampled_from(sorted(valid)))]
        edit = st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255))
        edits = data.draw(st.lists(edit, min_size=1, max_size=8))
        raw = _mutate(base, edits)[: data.draw(st.integers(1, len(base)))]
    path = tmp_path_factory.getbasetemp() / "fuzz.pth"
    path.write_bytes(raw)
    try:
        got = load_state_dict(path)
    except ValueError as e:
        assert str(path) in str(e)
    else:
        assert all(isinstance(a, np.ndarray) for a in got.values())


# --- where a hostile file surfaces ------------------------------------------------------------------


@pytest.fixture
def hostile_torchvision_file(tmp_path, monkeypatch):
    from bench import torchvision_weights

    path = tmp_path / "mobilenet_v2-b0353104.pth"
    path.write_bytes(_state([("w", _global("os", "system") + _str("true") + b"\x85R")]))
    monkeypatch.setenv(torchvision_weights.ENV_VAR, str(path))
    return path


# The published file is pinned by SHA-256, so a hostile file in its place is refused before it is unpickled;
# the reader's own refusals (above) stand behind that for any other checkpoint.

def test_a_run_gets_a_user_error_naming_the_file(hostile_torchvision_file):
    from bench.backbones import BACKBONES
    from bench.weights import build_backbone

    with pytest.raises(UserError, match=f"'{hostile_torchvision_file}' is not torchvision's .*its SHA-256 is"):
        build_backbone(BACKBONES.get("mobilenet_v2"), "torchvision", 32, pretrained=True)


def test_weights_verify_says_what_is_wrong_and_exits_2(hostile_torchvision_file):
    out = tlbench("weights", "verify")
    assert out.returncode == 2, out.stderr
    assert f"error: '{hostile_torchvision_file}' is not torchvision's mobilenet_v2-b0353104.pth" in out.stderr
    assert "Traceback" not in out.stderr
