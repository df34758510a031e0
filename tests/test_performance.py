"""Issue 6: precision / XLA / batching options, the frozen-cached mode, peak memory, the FLOP counter.

Tiny: mobilenet_v2_035 at 32 px on synthetic patterns. The frozen backbone gets "pretrained"
weights made here (random init with BatchNorm statistics calibrated on images): Keras's random init
leaves BatchNorm's moving variance at 1, which in inference mode shrinks the features to ~1e-12, and
no head learns from those.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from bench import features, flops, inputs, memory, recipes, runner, suite, tables
from bench import model as model_lib
from bench.backbones import BACKBONES
from bench.preprocessing import Normalize


SUITE = """\
name: perf
defaults:
  epochs: {epochs}
  batch_size: 16
  input_size: 32
  weights: {weights}
  head: {{dense: [32]}}
datasets:
  patterns: {{type: synthetic, image_size: 24, classes: 4, train: 128, test: 64, noise: 10}}
matrix: {{backbone: mobilenet_v2_035, dataset: patterns, mode: [frozen, frozen-cached]}}
"""


@pytest.fixture(scope="module")
def calibrated_weights(tmp_path_factory) -> Path:
    keras.utils.set_random_seed(0)
    backbone = BACKBONES.get("mobilenet_v2_035").build(32, weights=None)
    for layer in backbone.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0  # one training-mode call sets the moving statistics to that batch's
    x = np.random.default_rng(1).integers(0, 256, (64, 32, 32, 3)).astype("uint8")
    backbone(Normalize("inception")(x), training=True)
    path = tmp_path_factory.mktemp("weights") / "calibrated.weights.h5"
    backbone.save_weights(path)
    keras.backend.clear_session()
    return path


@pytest.fixture
def runs(tmp_path, calibrated_weights, monkeypatch):
    monkeypatch.setenv("TLBENCH_CACHE", str(tmp_path / "cache"))

    def load(epochs=5, weights=calibrated_weights) -> dict:
        path = tmp_path / "perf.yaml"
        path.write_text(SUITE.format(epochs=epochs, weights=weights))
        return {r.mode: r for r in suite.load(path).runs}

    return load


def _run(config, **changes) -> dict:
    record = runner.run_one(dataclasses.replace(config, **changes), environment={}, verbose=0)
    assert record["status"] == "ok", record.get("traceback") or record["error"]
    return record


# --- precision, XLA, batching ---------------------------------------------------------------

@pytest.mark.parametrize("precision", ["float32", "mixed_float16", "mixed_bfloat16"])
def test_precision_batch_and_steps_per_execution_are_applied_and_recorded(runs, precision):
    record = _run(runs(epochs=1, weights="none")["frozen"], precision=precision, jit_compile="off",
                  batch_size=8, steps_per_execution=2)
    assert record["precision"] == precision
    assert record["xla"] == {"requested": "off", "resolved": False}
    assert record["execution"] == {"batch_size": 8, "steps_per_execution": 2, "train_steps_per_epoch": 16,
                                   "inputs": "uint8 images",
                                   "pipeline": "tf.data gather, one prefetching iterator for the whole fit",
                                   "verbose": 0, "clock": "time.perf_counter", "sync": "metrics variables read to the host",
                                   "read_at": ["on_epoch_begin", "on_test_begin", "on_epoch_end"],
                                   "per_batch_hook": False, "per_step_host_sync": True}
    assert np.isfinite(record["epochs"][0]["loss"])


@pytest.mark.parametrize("precision, compute", [("float32", "float32"), ("mixed_float16", "float16"),
                                                ("mixed_bfloat16", "bfloat16")])
def test_model_computes_in_the_policy_with_a_float32_softmax(runs, precision, compute):
    config = dataclasses.replace(runs(weights="none")["frozen"], precision=precision, jit_compile="on",
                                 steps_per_execution=3)
    m = model_lib.build(config, (24, 24, 3), 4)
    model_lib.compile(m, config, recipes.stages(config)[0], 1)
    assert m.get_layer("dense_0").compute_dtype == compute and m.get_layer("dense_0").variable_dtype == "float32"
    assert m.get_layer("predictions").compute_dtype == "float32"
    assert m.jit_compile is True and m.steps_per_execution == 3
    keras.backend.clear_session()


@pytest.mark.parametrize("steps_per_execution, pipeline", [(1, "one prefetching iterator for the whole fit"),
                                                              (2, "a thread-free iterator per epoch")])
def test_each_epoch_is_one_pass_over_a_fresh_permutation(steps_per_execution, pipeline):
    x = np.arange(10, dtype="uint8")[:, None]
    args, what = inputs.fit_arguments(x, x, x[:4], x[:4], batch_size=4, steps_per_execution=steps_per_execution)
    assert what.endswith(pipeline)
    steps = args.get("steps_per_epoch")
    if steps:  # one endless iterator: each run of steps_per_epoch batches is an epoch
        it = iter(args["x"])
        epochs = [np.concatenate([next(it)[0].numpy().ravel() for _ in range(steps)]) for _ in range(3)]
    else:
        epochs = [np.concatenate([b[0].numpy().ravel() for b in args["x"]]) for _ in range(3)]
    for e in epochs:
        assert sorted(e) == list(range(10))
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled between epochs
    assert np.concatenate([b[0].numpy().ravel() for b in args["validation_data"]]).tolist() == [0, 1, 2, 3]


# --- frozen-cached -----------------------------------------------------------------------------

def test_cached_head_is_frozens_head(runs):
    """Same layers and parameters, and with the same weights the same predictions: trunk, then head."""
    r = runs(weights="none")
    x = np.random.default_rng(0).integers(0, 256, (4, 24, 24, 3)).astype("uint8")
    full = model_lib.build(r["frozen"], x.shape[1:], 4)
    trunk = model_lib.feature_extractor(r["frozen-cached"], x.shape[1:])
    head = model_lib.build_head(r["frozen-cached"], trunk.output.shape[1:], 4)
    head_layers = [layer.name for layer in head.layers[1:]]
    assert head_layers == ["dense_0", "predictions"]
    for name in head_layers:
        head.get_layer(name).set_weights(full.get_layer(name).get_weights())
    trunk.set_weights(full.get_layer("mobilenetv2_0.35_32").get_weights())
    assert model_lib.parameter_counts(head)["trainable"] == model_lib.parameter_counts(full)["trainable"]
    np.testing.assert_allclose(keras.ops.convert_to_numpy(head(trunk(x))), keras.ops.convert_to_numpy(full(x)),
                               rtol=1e-5, atol=1e-6)
    keras.backend.clear_session()


def test_frozen_cached_learns_like_frozen_and_the_second_run_hits_the_cache(runs, tmp_path):
    r = runs()
    frozen = _run(r["frozen"])
    first = _run(r["frozen-cached"])
    second = _run(r["frozen-cached"])
    assert first["features"]["cache_hit"] is False and second["features"]["cache_hit"] is True
    assert first["features"]["key"] == second["features"]["key"]
    assert Path(first["features"]["file"]).parent == tmp_path / "cache" / "features"
    # a hit still reports what the extraction cost when it ran
    assert second["features"]["extract_seconds"] == first["features"]["extract_seconds"] > 0
    assert first["execution"]["inputs"] == "cached features" and first["features"]["shape"] == [1280]
    assert first["params"]["trainable"] == frozen["params"]["trainable"]
    assert first["params"]["non_trainable"] == 0  # the backbone is not in the head's model
    acc = {name: rec["epochs"][-1]["val_accuracy"] for name, rec in
           [("frozen", frozen), ("first", first), ("second", second)]}
    assert acc["frozen"] > 0.6 and acc["first"] > 0.6, acc  # 4 classes: chance is 0.25
    assert abs(acc["first"] - acc["frozen"]) <= 0.15, acc  # the same training, up to init and batch order
    # Re-seeded after the features: a hit trains exactly as the miss did.
    assert [e["loss"] for e in second["epochs"]] == pytest.approx([e["loss"] for e in first["epochs"]], rel=1e-4)


def test_feature_cache_key_follows_what_changes_the_features(runs):
    c = runs(weights="none")["frozen-cached"]
    from bench import datasets

    data = datasets.load("synthetic", c.dataset_params, None, None, 0)
    base, ident = features.key(c, data, "fp")
    assert ident["weights"] == "none/seed 0"  # random weights: the seed that drew them
    for change in [dict(precision="mixed_bfloat16"), dict(input_size=48), dict(repeat=1),
                   dict(head={**c.head, "pooling": "max"}), dict(cut="early")]:
        assert features.key(dataclasses.replace(c, **change), data, "fp")[0] != base, change
    assert features.key(c, data, "other data")[0] != base
    # The head's own settings do not change the features: one cache serves them all.
    assert features.key(dataclasses.replace(c, learning_rate=0.1, head={**c.head, "dense": [8]}), data, "fp")[0] == base


def test_an_unreadable_cache_file_is_recomputed_and_replaced(runs, tmp_path):
    c = runs(weights="none")["frozen-cached"]
    from bench import datasets

    data = datasets.load("synthetic", c.dataset_params, None, None, 0)
    k, _ = features.key(c, data, "fp")
    path = features.cache_dir() / f"{k}.npz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"half a file")
    got = features.obtain(c, data, "fp")
    assert got.info["cache_hit"] is False and got.x_train.shape == (128, 1280) and got.x_train.dtype == np.float32
    assert features.obtain(c, data, "fp").info["cache_hit"] is True
    assert not list(path.parent.glob(".*.tmp"))  # the atomic write left no temporary behind
    keras.backend.clear_session()


def test_tables_never_confuse_cached_with_frozen():
    assert tables.mode_label("frozen-cached") == "Frozen, cached features"
    assert tables.mode_label("frozen") == "Frozen weights"
    assert sorted(["scratch", "frozen-cached", "unfrozen", "frozen"], key=lambda m: tables.mode_order({"mode": m})) == [
        "frozen", "frozen-cached", "unfrozen", "scratch"]


# --- peak memory ------------------------------------------------------------------------------

def test_peak_host_memory_sees_an_allocation_that_is_freed_again():
    with memory.Peak() as peak:
        a = np.ones(200 * 2**20 // 8)  # 200 MiB, touched
        del a
    rec = peak.record()
    assert rec["host_peak_rss_bytes"] - rec["host_start_rss_bytes"] >= 150 * 2**20
    assert rec["accelerator_peak_bytes"] is None  # a CPU exposes none


class _FakeJaxDevice:
    """A JAX accelerator's memory_stats as the runtime reports them: bytes in use now, and a lifetime peak."""

    def __init__(self):
        self.in_use, self.peak = 0, 0

    def use(self, n):
        self.in_use = n
        self.peak = max(self.peak, n)

    def memory_stats(self):
        return {"bytes_in_use": self.in_use, "peak_bytes_in_use": self.peak}


def test_jax_peak_is_per_run_though_jax_keeps_only_a_lifetime_peak(monkeypatch):
    devices = [_FakeJaxDevice(), _FakeJaxDevice()]
    monkeypatch.setattr(memory, "_jax_accelerators", lambda: devices)
    with memory.Peak(interval_s=0.01) as big:  # the first run sets the lifetime peak: 2 x 3 GiB
        for d in devices:
            d.use(3 * 2**30)
        time.sleep(0.05)
        for d in devices:
            d.use(2**30)
    assert big.record()["accelerator_peak_bytes"] == 6 * 2**30
    assert "rose during this run" in big.record()["accelerator_peak_source"]
    with memory.Peak(interval_s=0.01) as small:  # a later, smaller run: its own peak, not the lifetime one
        devices[0].use(1.5 * 2**30)
        time.sleep(0.05)
        devices[0].use(2**30)
    rec = small.record()
    assert rec["accelerator_peak_bytes"] == 2.5 * 2**30  # 1.5 + 1 GiB, summed over both devices
    assert "sampled every 0.01 s" in rec["accelerator_peak_source"]


def test_every_record_carries_its_memory(runs):
    rec = _run(runs(epochs=1, weights="none")["frozen"])
    m = rec["memory"]
    assert m["host_peak_rss_bytes"] >= m["host_start_rss_bytes"] > 10 * 2**20
    assert set(m) >= {"accelerator_peak_bytes", "accelerator_peak_source"}


# --- FLOP counter -----------------------------------------------------------------------------

def test_flops_of_a_hand_computed_model():
    L = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", name="conv")(inputs)           # 8*8*4 * 3*3*3      = 6912 MACs
    x = L.DepthwiseConv2D(3)(x)                                        # 6*6*4 * 3*3        = 1296
    x = L.Conv2D(6, 1, groups=2)(x)                                    # 6*6*6 * 1*1*(4/2)  =  432
    x = L.SeparableConv2D(8, 3, padding="same")(x)                     # 6*6*6*9 + 6*6*6*8  = 3672
    x = L.BatchNormalization()(x)                                      # not counted
    x = L.GlobalAveragePooling2D()(x)
    outputs = L.Dense(5)(x)                                            # 8*5                =   40
    model = keras.Model(inputs, outputs)
    model.get_layer("conv").trainable = False
    c = flops.count(model)
    assert c.forward == 2 * (6912 + 1296 + 432 + 3672 + 40)
    # a frozen first layer: forward only; the rest forward and two backward passes
    assert c.train == 2 * 6912 + 3 * 2 * (1296 + 432 + 3672 + 40)
    assert c.uncounted == []
    assert flops.epoch_flops(c, 10, 4) == 10 * c.train + 4 * c.forward


@pytest.mark.parametrize("size, gmac", [(299, 5.7), (139, 1.00)])
def test_flops_of_inception_v3_match_the_published_figures(size, gmac):
    """The published figures: 5.7 GMAC per image at 299 px, 1.00 GMAC at 139 px."""
    c = flops.count(BACKBONES.get("inception_v3").build(size, weights=None))
    assert c.forward / 2 / 1e9 == pytest.approx(gmac, rel=0.02)
    keras.backend.clear_session()


@pytest.mark.slow
def test_frozen_cached_matches_frozen_on_fashion_mnist_with_imagenet_weights(tmp_path, monkeypatch):
    """The real thing: torchvision's ImageNet MobileNetV2 on 2,000 Fashion-MNIST images at 96 px."""
    from bench import datasets
    from bench.errors import UserError
    from bench.torchvision_weights import find_mobilenet_v2_file

    try:
        find_mobilenet_v2_file()
        datasets.DATASETS.get("fashion_mnist").load({})
    except (FileNotFoundError, UserError) as e:
        pytest.skip(f"needs the offline weights and data (scripts/setup.sh): {e}")
    monkeypatch.setenv("TLBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "fm.yaml"
    path.write_text("name: fm\ndefaults: {input_size: 96, weights: torchvision, train_size: 2000, val_size: 1000, "
                    "epochs: 3}\nmatrix: {backbone: mobilenet_v2, dataset: fashion_mnist, "
                    "mode: [frozen, frozen-cached]}\n")
    r = {c.mode: c for c in suite.load(path).runs}
    frozen, cached = _run(r["frozen"]), _run(r["frozen-cached"])
    for e_frozen, e_cached in zip(frozen["epochs"], cached["epochs"]):
        assert e_cached["val_accuracy"] == pytest.approx(e_frozen["val_accuracy"], abs=0.03)
    assert cached["epochs"][-1]["val_accuracy"] > 0.75  # ImageNet features: far above the 0.10 of chance
    steady = lambda rec: np.median([e["train_seconds"] for e in rec["epochs"][1:]])  # noqa: E731
    assert steady(cached) < steady(frozen) / 5  # the head alone: no backbone pass per epoch
