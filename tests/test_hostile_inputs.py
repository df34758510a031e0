"""Hostile and broken inputs (issue 15): each gets exit 2, a message naming the file and the problem, no
traceback, in bounded time, and nothing written outside the results folder."""
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import datasets, numpy_pickle, suite
from bench.errors import SuiteErrors, UserError
from conftest import tlbench

GOOD = """\
name: ok
defaults: {epochs: 1, train_size: 8, val_size: 4, input_size: 32, weights: none}
datasets:
  tiny: {type: synthetic, image_size: 8, classes: 2, train: 8, test: 4}
matrix: {backbone: mobilenet_v2_035, dataset: tiny, mode: frozen}
"""
BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi")) + "name: *i\n"


def _error(tmp_path, content: bytes | str) -> str:
    path = tmp_path / "suite.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(SuiteErrors) as e:
        suite.load(path)
    return "\n".join(map(str, e.value.errors))


@pytest.mark.parametrize("content, expected", [
    (b"\xff\xfe" + "name: x\n".encode("utf-16-le"), "not UTF-8 text: byte 0xff at offset 0 (it looks like UTF-16"),
    (bytes(range(256)) * 4, "not UTF-8 text: byte 0x80 at offset 128"),
    (b"name: ok\x00\n", "not valid YAML"),  # a NUL byte in the text
    (BOMB, "more than 100,000 values once aliases are expanded"),
    ("a: &a [*a]\nname: x\n", "not valid YAML: an alias that contains itself"),
    ("name: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested more than 40 levels deep"),
    ("name: " + "{a: " * 60 + "1" + "}" * 60 + "\n", "nested more than 40 levels deep"),
    (GOOD.replace("epochs: 1", "epochs: " + "9" * 300), "defaults.epochs: must be at most 100,000, got 9999"),
    (GOOD.replace("epochs: 1", "epochs: " + "9" * 5000), "not valid YAML: Exceeds the limit"),
    (GOOD.replace("epochs: 1", "epochs: 1, repeats: 1000000000"), "defaults.repeats: must be at most 1,000"),
    (GOOD.replace("name: ok", "name: ../../escape"), "name: required: the results folder's name"),
    (GOOD.replace("name: ok", 'name: "a\\0b"'), "name: required: the results folder's name"),
    (GOOD.replace("name: ok", "name: " + "n" * 300), "(300 characters)"),
    (GOOD.replace("  tiny:", "  ../up:").replace("dataset: tiny", "dataset: ../up"),
     "datasets.../up: a dataset name goes into run ids and file names"),
    ("k" * 10_000 + ": 1\n", "(line 1: 'kkkkkkkkkk"),  # PyYAML refuses a key this long; the message shows it
    (GOOD.replace("mode: frozen", "mode: frozen, seed: [" + ", ".join(map(str, range(400))) + "], epochs: ["
                  + ", ".join(map(str, range(1, 400))) + "]"), "more than 100,000 runs; split the suite"),
])
def test_hostile_suites_are_refused_with_the_file_and_the_problem(tmp_path, content, expected):
    message = _error(tmp_path, content)
    assert str(tmp_path / "suite.yaml") in message and expected in message, message
    assert len(message) < 2000  # a 10,000-character key or name is quoted, not echoed


def test_the_cli_refuses_them_with_exit_2_and_writes_nothing(tmp_path):
    hostile = [b"\xff\xfename", BOMB.encode(), GOOD.replace("name: ok", "name: ../../escape").encode()]
    for i, content in enumerate(hostile):
        path = tmp_path / f"s{i}.yaml"
        path.write_bytes(content)
        for command in (["validate", path], ["run", path, "--results", tmp_path / "results"]):
            p = tlbench(*command, timeout=120)
            assert p.returncode == 2 and "Traceback" not in p.stderr and str(path) in p.stderr, p.stderr[-2000:]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["s0.yaml", "s1.yaml", "s2.yaml"]


def _refused_cleanly_or_loaded(path, content: bytes) -> None:
    path.write_bytes(content)
    try:
        suite.load(path)
    except SuiteErrors as e:
        assert e.errors and all(str(err).startswith(str(path)) and len(str(err)) < 2000 for err in e.errors)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=400))
def test_any_bytes_are_a_suite_or_a_located_error(tmp_path, content):
    _refused_cleanly_or_loaded(tmp_path / "b.yaml", content)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(at=st.integers(0, len(GOOD)), cut=st.integers(0, 20), insert=st.binary(max_size=12))
def test_a_good_suite_with_bytes_cut_or_inserted_loads_or_gives_a_located_error(tmp_path, at, cut, insert):
    raw = GOOD.encode()
    _refused_cleanly_or_loaded(tmp_path / "m.yaml", raw[:at] + insert + raw[at + cut:])


# --- local dataset files are untrusted ----------------------------------------------------------

class _Shell:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _cifar(folder, batch) -> None:
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))


def test_a_crafted_cifar_batch_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    marker = tmp_path / "PWNED"
    _cifar(tmp_path / "data" / "cifar-10-batches-py", {b"data": _Shell(marker), b"labels": [0]})
    monkeypatch.setenv("TLBENCH_DATA_DIR", str(tmp_path / "data"))
    with pytest.raises(UserError, match=r"data_batch_1' is not a CIFAR python batch tlbench can read: "
                                        r"UnpicklingError: refusing to load global posix.system"):
        datasets.DATASETS.get("cifar10").load({})
    assert not marker.exists()


def test_a_real_format_cifar_batch_reads_back_exactly(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (4, 3072)).astype(np.uint8)
    _cifar(tmp_path / "data" / "cifar-10-batches-py",
           {b"batch_label": b"training batch 1 of 5", b"labels": [3, 1, 4, 1], b"data": data,
            b"filenames": [b"a.png", b"b.png", b"c.png", b"d.png"]})
    monkeypatch.setenv("TLBENCH_DATA_DIR", str(tmp_path / "data"))
    x_train, y_train, x_test, y_test, classes, source = datasets.DATASETS.get("cifar10").load({})
    assert x_train.shape == (20, 32, 32, 3) and y_train.tolist() == [3, 1, 4, 1] * 5 and classes == 10
    assert np.array_equal(x_test[1], data[1].reshape(3, 32, 32).transpose(1, 2, 0))


@pytest.mark.parametrize("value, refused", [
    (np.array([1, "a"], dtype=object), "unsupported array type"),
    ({b"x": {1, 2}}, "refusing to load global __builtin__.set"),  # protocol 2 names Python 2 modules
    (np.arange(6, dtype=">f8").reshape(2, 3), None),  # big-endian floats read back as they were
])
def test_the_reader_admits_plain_data_and_numeric_arrays_only(value, refused):
    blob = pickle.dumps(value, protocol=2)
    if refused is None:
        assert np.array_equal(numpy_pickle.load(blob), value)
        return
    with pytest.raises(pickle.UnpicklingError, match=refused):
        numpy_pickle.load(blob)


_IDX = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz"]


def _idx(*dims: int, data: bytes | None = None) -> bytes:
    header = bytes([0, 0, 8, len(dims)]) + np.array(dims, ">u4").tobytes()
    return header + (bytes(int(np.prod(dims))) if data is None else data)


@pytest.mark.parametrize("damage, expected", [
    ({0: _idx(100_000, 1000, 1000, data=b"")}, "train-images-idx3-ubyte.gz: header dimensions [100000, 1000, 1000] "
                                               "are truncated or too large"),  # asks for 100 GB: refused unread
    ({0: b"PK\x03\x04 not idx"}, "train-images-idx3-ubyte.gz: not an unsigned-byte IDX file"),
    ({0: _idx(4, 28, 28, data=bytes(100))}, "train-images-idx3-ubyte.gz: truncated: 100 of 3,136 bytes"),
    ({1: _idx(3)}, "training arrays are uint8 (4, 28, 28) images with (3,) labels"),
    ({2: None}, "t10k-images-idx3-ubyte.gz: Not a gzipped file"),
])
def test_a_damaged_or_hostile_local_fashion_mnist_is_refused_naming_the_file(tmp_path, monkeypatch, damage, expected):
    import gzip

    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for i, (name, content) in enumerate(zip(_IDX, [_idx(4, 28, 28), _idx(4), _idx(2, 28, 28), _idx(2)])):
        content = damage.get(i, content)
        if content is None:
            (folder / name).write_bytes(b"not gzip")
        else:
            with gzip.open(folder / name, "wb") as f:
                f.write(content)
    monkeypatch.setenv("TLBENCH_DATA_DIR", str(tmp_path))
    with pytest.raises(UserError) as e:
        datasets.DATASETS.get("fashion_mnist").load({})
    assert f"'{folder}' is not a copy tlbench can read" in str(e.value) and expected in str(e.value), str(e.value)
