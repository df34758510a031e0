"""Diagnostics: crafted records for each (fires when it should, with its evidence), silence on the published
clean records, the footnote markers and text, the measurements behind them (the BatchNorm check leaves the
model as it was; per-epoch load; NVML through a stand-in), and one real tiny run in the BatchNorm case."""
import copy
import json
import math
import sys
import types

import keras
import numpy as np
import pytest

from bench import diagnostics as D
from bench import gpu, load, schema
from bench import model as model_lib
from bench import suite
from conftest import DATA, ROOT

PUBLISHED = ROOT / "results" / "published" / "offline-default" / "runs"
# The records they replaced (commit 977f244): clean, and made before the runner's BatchNorm check.
BEFORE = ROOT / "results" / "published" / "offline-default" / "superseded"
BASE = next(PUBLISHED.glob("*-scratch-r0-*.json"))  # 10 classes, 5,000 training and 2,000 validation images


def craft(val, train=None, seconds=None, **fields) -> dict:
    """A published scratch record with these per-epoch validation and training accuracies and epoch seconds;
    without its BatchNorm check unless `fields` give one."""
    record = copy.deepcopy(json.loads(BASE.read_text()))
    del record["batchnorm_check"]
    train = train or [v + 0.02 for v in val]
    seconds = seconds or [15.0] + [10.0] * (len(val) - 1)
    record["config"]["epochs"] = len(val)
    record["epochs"] = [{"epoch": i + 1, "stage": 1, "phase": "first" if i == 0 else "steady", "epoch_seconds": s,
                         "train_seconds": 0.9 * s, "val_seconds": 0.1 * s, "train_images": 5000,
                         "images_per_second": 5000 / (0.9 * s), "loss": 0.5, "val_loss": 0.6, "accuracy": t,
                         "val_accuracy": v} for i, (v, t, s) in enumerate(zip(val, train, seconds))]
    record.update(fields)
    assert schema.problems(record) == []
    return record


def named(record, name) -> list[D.Diagnostic]:
    return [d for d in D.for_record(record) if d.name == name]


# --- the published records --------------------------------------------------------------------

def test_the_previous_published_records_are_clean():
    records = [json.loads(p.read_text()) for p in sorted(BEFORE.glob("*.json"))]
    assert len(records) == 9
    assert D.for_records(records) == {r["run_id"]: [] for r in records}
    assert all(found == [] for found in D.for_groups(records).values())
    assert D.text(records) == ["9 runs, 3 configurations: no diagnostics"]
    assert D.markers(records).notes == []


def test_the_published_records_have_one_finding_their_noisiest_run():
    """Measured by `make run` at 22e1086: one scratch run's steady epochs spread 39.5-54.2 s with no other
    process busy. Everything else is silent, the BatchNorm check included (batch and moving statistics agree)."""
    records = [json.loads(p.read_text()) for p in sorted(PUBLISHED.glob("*.json"))]
    found = {run_id: [d.name for d in ds] for run_id, ds in D.for_records(records).items() if ds}
    assert found == {"mobilenet_v2-fashion_mnist-scratch-r2-6152a1ccee": ["noisy-timing"]}
    assert all(found == [] for found in D.for_groups(records).values())
    assert all(r["batchnorm_check"] is None or abs(r["batchnorm_check"]["batch_accuracy"]
                                                  - r["batchnorm_check"]["moving_accuracy"]) < 0.05 for r in records)


# --- accuracy -----------------------------------------------------------------------------------

def test_validation_at_chance_with_training_at_85_gets_did_not_learn_and_batchnorm():
    record = craft([0.10, 0.10, 0.109, 0.10, 0.10], train=[0.45, 0.62, 0.74, 0.80, 0.85])
    (dnl,) = named(record, "did-not-learn")
    assert dnl.severity == "error" and "training reached 85.0 %" in dnl.explanation
    ceiling = 0.1 + D.Z * math.sqrt(0.1 * 0.9 / 2000)
    assert dnl.evidence["ceiling"] == pytest.approx(ceiling) and round(ceiling, 4) == 0.1131
    assert dnl.evidence["epochs_at_chance"] == [1, 2, 3, 4, 5]
    assert dnl.affects == tuple(f"accuracy@{n}" for n in range(1, 6))
    (bn,) = named(record, "batchnorm-statistics")  # a published record predates the check
    assert bn.severity == "warning" and "unconfirmed" in bn.explanation
    assert bn.evidence["gap_epochs"] == [1, 2, 3, 4, 5] and bn.evidence["last_gap"] == pytest.approx(0.75)
    assert bn.evidence["text"] == "training 85.0 % vs validation 10.0 % at epoch 5"


def test_the_batchnorm_check_says_whether_the_gap_is_the_cause():
    chance = [0.10] * 5, [0.45, 0.62, 0.74, 0.80, 0.85]
    check = {"images": 256, "batch_size": 32, "batchnorm_layers": 52, "moving_accuracy": 0.10}
    (cause,) = named(craft(*chance, batchnorm_check={**check, "batch_accuracy": 0.82}), "batchnorm-statistics")
    assert cause.severity == "error" and "it is the cause: 256 validation images score 82.0 %" in cause.explanation
    assert cause.evidence["cause"] and "batch − moving +72.0 points" in cause.evidence["text"]
    (other,) = named(craft(*chance, batchnorm_check={**check, "batch_accuracy": 0.12}), "batchnorm-statistics")
    assert other.severity == "note" and not other.evidence["cause"] and "it is not the cause" in other.explanation
    # no BatchNorm layer trained: no BatchNorm diagnostic, the run still did not learn
    assert [d.name for d in D.for_record(craft(*chance, batchnorm_check=None))] == ["did-not-learn"]
    frozen = craft(*chance)
    frozen["config"]["mode"] = "frozen"
    assert named(frozen, "batchnorm-statistics") == []


def test_a_batch_statistics_lead_alone_fires_the_batchnorm_diagnostic():
    record = craft([0.5, 0.6, 0.62], batchnorm_check={"images": 256, "moving_accuracy": 0.3, "batch_accuracy": 0.6})
    (bn,) = named(record, "batchnorm-statistics")
    assert bn.evidence["gap_epochs"] == [] and bn.affects == ("accuracy@3",)


def test_chance_has_a_binomial_margin_from_the_validation_set_size():
    record = craft([0.112] * 3, train=[0.10] * 3)
    (dnl,) = named(record, "did-not-learn")
    assert "training did not leave chance either" in dnl.explanation
    record["data"]["val_images"] = 20000  # the same 11.2 % is beyond chance on ten times the images
    assert named(record, "did-not-learn") == []


def test_divergence():
    record = craft([0.5, 0.6, 0.1], status="diverged")
    record["epochs"][2]["loss"] = math.nan
    record["config"]["epochs"] = 5
    (d,) = named(record, "diverged")
    assert d.severity == "error" and d.evidence["epoch"] == 3
    assert d.affects == ("accuracy@3", "accuracy@4", "accuracy@5")


def test_overfitting_needs_validation_to_fall_for_two_epochs_after_rising():
    val, train = [0.70, 0.80, 0.85, 0.80, 0.78], [0.65, 0.82, 0.90, 0.95, 0.98]
    (d,) = named(craft(val, train), "overfitting")
    assert d.evidence["best_epoch"] == 3 and d.evidence["gap_growth"] == pytest.approx(0.18)
    assert d.affects == ("accuracy@4", "accuracy@5")
    assert "85.0 % → 78.0 %" in d.evidence["text"]
    assert named(craft(val[:4] + [0.84], train), "overfitting") == []  # back within noise of its best
    # validation swinging from epoch to epoch (unfrozen r0 of the published records): instability, not this
    swing = [0.865, 0.826, 0.886, 0.824, 0.841], [0.767, 0.854, 0.888, 0.898, 0.906]
    assert named(craft(*swing), "overfitting") == []
    plateau = [0.836, 0.848, 0.835, 0.845, 0.844], [0.78, 0.87, 0.886, 0.905, 0.923]  # frozen r0: flat
    assert named(craft(*plateau), "overfitting") == []


# --- time ---------------------------------------------------------------------------------------

def test_steady_epochs_26_5_41_7_26_5_28_5_s_are_noisy_timing_with_the_load_as_evidence():
    record = craft([0.5] * 5, seconds=[45.0, 26.5, 41.7, 26.5, 28.5])
    record["epochs"][2]["load"] = {"loadavg_1min": 3.4, "others_fraction": 0.45, "steal_fraction": 0.02,
                                   "self_fraction": 0.5}
    record["load"].update(others_fraction=0.12, busy_processes=[{"pid": 7, "name": "stress", "cores": 0.5,
                                                                 "cpu_seconds": 60.0}])
    (d,) = named(record, "noisy-timing")
    assert d.evidence["cv"] == pytest.approx(0.238, abs=0.001) and d.affects == ("seconds_per_epoch",)
    assert "vary 26.5–41.7 s (coefficient of variation 23.8 %)" in d.explanation
    assert d.evidence["text"].startswith("during epoch 3 others used 45.0 % of the CPUs, steal 2.0 %, 1-min load 3.4;"
                                         " over the run others used 12.0 %")
    assert "busy: stress (0.5 cores)" in d.evidence["text"] and d.evidence["load"]["busy_processes"] == ["stress"]
    assert named(record, "steady-slower-than-first") == []  # epoch 1 (45 s) stays the slowest


def test_each_stage_is_its_own_sample():
    """A two-stage recipe's head epochs and full epochs cost differently: pooled they would look noisy."""
    record = craft([0.5] * 8, seconds=[8.0, 5.0, 5.1, 5.0, 30.0, 20.0, 20.4, 20.2])
    for e in record["epochs"][4:]:
        e["stage"] = 2
    record["epochs"][4]["phase"] = "first"
    assert D.for_record(record) == []


def test_compile_dominated_and_its_opposite():
    (d,) = named(craft([0.5] * 4, seconds=[25.0, 10.0, 10.2, 9.8]), "compile-dominated")
    assert d.affects == ("first_epoch",) and d.evidence["steady_median_seconds"] == 10.0
    assert named(craft([0.5] * 4, seconds=[16.5, 12.6, 12.7, 12.3]), "compile-dominated") == []
    (s,) = named(craft([0.5] * 4, seconds=[26.0, 26.5, 41.7, 26.5]), "steady-slower-than-first")
    assert s.evidence["slower"] == {2: 26.5, 3: 41.7, 4: 26.5} and "steady epoch 3 took 41.7 s" in s.explanation


def test_input_bound_over_5_percent_of_an_epoch():
    record = craft([0.5] * 3, seconds=[20.0, 10.0, 10.0], input_pipeline={"seconds_per_epoch": 0.8})
    (d,) = named(record, "input-bound")
    assert d.evidence["share"] == {2: pytest.approx(0.08), 3: pytest.approx(0.08)}  # epoch 1: 4 % of 20 s
    assert d.affects == ("seconds_per_epoch",) and "up to 8.0 % of an epoch" in d.explanation
    record["input_pipeline"]["seconds_per_epoch"] = 0.45  # 4.5 %
    assert named(record, "input-bound") == []


def test_gpu_throttling_is_flagged():
    record = craft([0.5] * 3, gpu={"start": [], "end": [], "throttled_seconds": [{"index": 0, "power": 12.5,
                                                                                  "thermal": 0.0}]})
    record["epochs"][1]["gpu"] = [{"index": 0, "throttle_reasons": ["hardware thermal slowdown"]}]
    (d,) = named(record, "gpu-throttled")
    assert d.evidence["text"] == "GPU 0 throttled 12.5 s for power; GPU 0: hardware thermal slowdown at an epoch's end"


# --- a configuration's repeats, markers, text -----------------------------------------------------

def test_too_few_samples_over_a_configurations_repeats():
    golden = [json.loads(p.read_text()) for p in sorted((DATA / "golden" / "runs").glob("*.json"))]
    found = D.for_groups(golden, key=lambda r: r["config"]["mode"])
    assert found["frozen"] == [] and found["unfrozen"] == []
    one_run, few_epochs = found["scratch"]  # repeat 1 failed; repeat 0 has 2 steady epochs
    assert one_run.evidence["text"] == "1 of 2 runs finished" and "first_epoch" in one_run.affects
    assert few_epochs.affects == ("seconds_per_epoch",) and few_epochs.evidence["steady_epochs"] == 2


def test_markers_put_footnote_numbers_on_the_cells_they_concern():
    noisy = craft([0.5] * 5, seconds=[45.0, 26.5, 41.7, 26.5, 28.5])
    again = copy.deepcopy(noisy)
    again["run_id"] = noisy["run_id"].replace("-r0-", "-r1-")
    chance = craft([0.10] * 5, train=[0.45, 0.62, 0.74, 0.80, 0.85])
    chance["config"]["mode"] = "unfrozen"
    chance["run_id"] = "unfrozen-run"
    records = [noisy, again, chance]
    notes = D.markers(records)
    rows = {r["run_id"]: D._default_key(r) for r in records}
    assert notes.mark(rows[noisy["run_id"]], "seconds_per_epoch") == "⁽¹⁾"
    assert notes.notes[0].startswith(f"noisy-timing (warning): {noisy['run_id']}: steady epochs vary")
    assert again["run_id"] in notes.notes[0] and len(notes.notes) == 4
    # did-not-learn, batchnorm-statistics, and too-few-samples (one run) over the row
    assert notes.mark(rows["unfrozen-run"], "accuracy@5") == "⁽²⁾⁽³⁾⁽⁴⁾"
    assert notes.mark(rows["unfrozen-run"], "first_epoch") == "⁽⁴⁾"
    assert notes.mark(rows["unfrozen-run"], "seconds_per_epoch") == ""
    assert notes.notes[3].startswith("too-few-samples (warning): over the row's runs: one finished run")
    lines = D.text(records)
    assert lines[0] == f"run {noisy['run_id']}" and lines[1].startswith("  warning noisy-timing: steady epochs")
    assert lines[-1] == "3 runs, 2 configurations: 5 diagnostics (1 error, 4 warnings)"


# --- the measurements -----------------------------------------------------------------------------

def test_epoch_load_shares_from_two_marks():
    tick = {"user": 0, "nice": 0, "system": 0, "idle": 0, "iowait": 0, "irq": 0, "softirq": 0, "steal": 0}
    start = {"cpu": tick, "own": 100}
    end = {"cpu": {**tick, "user": 150, "idle": 40, "steal": 10}, "own": 190}  # of 200 ticks 90 ours, 40 idle
    got = load.epoch(start, end)
    assert (got["self_fraction"], got["others_fraction"], got["steal_fraction"]) == (0.45, 0.3, 0.05)
    assert load.epoch(start, {**end, "own": None}) is None
    real = load.epoch(load.mark(), load.mark())  # no tick may pass: None, or shares of a real span
    assert real is None or 0 <= real["others_fraction"] <= 1


class _FakeNVML(types.ModuleType):
    """pynvml's calls that gpu.py makes, for one GPU held at its power cap."""

    class NVMLError(Exception):
        pass

    def __init__(self):
        super().__init__("pynvml")
        self.violation = 1_000_000_000
        calls = {"nvmlInit": None, "nvmlDeviceGetCount": 1, "nvmlDeviceGetHandleByIndex": "h",
                 "nvmlDeviceGetName": b"NVIDIA H200", "nvmlDeviceGetClockInfo": 1200,
                 "nvmlDeviceGetMaxClockInfo": 1980, "nvmlDeviceGetTemperature": 71, "nvmlDeviceGetPowerUsage": 650_000,
                 "nvmlDeviceGetEnforcedPowerLimit": 700_000, "nvmlDeviceGetCurrentClocksThrottleReasons": 0x4 | 0x1}
        for name, value in calls.items():
            setattr(self, name, lambda *a, v=value: v)
        self.nvmlDeviceGetViolationStatus = lambda h, policy: self._violation(policy)

    def _violation(self, policy):
        if policy == 1:
            raise self.NVMLError("not supported")
        return types.SimpleNamespace(violationTime=self.violation)


def test_nvml_readings_and_throttled_time(monkeypatch):
    fake = _FakeNVML()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    gpu._nvml.cache_clear()
    try:
        start = gpu.read()
        fake.violation += 2_500_000_000
        end = gpu.read()
    finally:
        gpu._nvml.cache_clear()
    assert start[0] | {"violation_ns": None} == {
        "index": 0, "name": "NVIDIA H200", "sm_clock_mhz": 1200, "max_sm_clock_mhz": 1980, "temperature_c": 71,
        "power_w": 650.0, "power_limit_w": 700.0, "throttle_reasons": ["software power cap"], "violation_ns": None}
    assert gpu.during(start, end)["throttled_seconds"] == [{"index": 0, "power": 2.5}]


def test_no_nvml_reads_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    gpu._nvml.cache_clear()
    try:
        assert gpu.read() is None and gpu.during(None, None) is None
    finally:
        gpu._nvml.cache_clear()


def test_batchnorm_check_writes_no_variable_and_scores_as_training_normalises(write_suite):
    config = suite.load(write_suite("""\
        name: t
        defaults: {input_size: 32, weights: none, head: {dense: [8]}}
        matrix: {backbone: mobilenet_v2_035, dataset: synthetic, mode: scratch}
        """)).runs[0]
    keras.utils.set_random_seed(0)
    model = model_lib.build(config, (32, 32, 3), 4)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (24, 32, 32, 3)).astype("uint8"), rng.integers(0, 4, 24)
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    got = model_lib.batchnorm_check(model, x, y, batch_size=8)
    assert all(np.array_equal(b, keras.ops.convert_to_numpy(w)) for b, w in zip(before, model.weights))
    assert got["images"] == 24 and got["batchnorm_layers"] == 52
    with model_lib._batch_statistics(
            [layer for layer in model_lib._layers(model) if isinstance(layer, keras.layers.BatchNormalization)]):
        ours = keras.ops.convert_to_numpy(model(x[:8], training=False))
    # Keras's own batch statistics: the same outputs, but its training=True moves the moving statistics
    np.testing.assert_allclose(ours, keras.ops.convert_to_numpy(model(x[:8], training=True)), rtol=1e-4, atol=1e-5)
    assert not all(np.array_equal(b, keras.ops.convert_to_numpy(w)) for b, w in zip(before, model.weights))
    model.trainable = False  # frozen BatchNorm normalises by its moving statistics in training too: nothing to check
    assert model_lib.batchnorm_check(model, x, y, batch_size=8) is None


@pytest.fixture(scope="module")
def bn_run(tmp_path_factory):
    """A real tiny run in the BatchNorm case: scratch, MobileNetV2's momentum 0.999, 32 steps."""
    from bench import runner

    path = tmp_path_factory.mktemp("bn") / "bn.yaml"
    path.write_text("""\
name: bn
defaults: {epochs: 2, batch_size: 16, input_size: 32, weights: none, head: {dense: [16]}}
datasets: {patterns: {type: synthetic, image_size: 32, classes: 4, train: 256, test: 256, noise: 20.0}}
matrix: {backbone: mobilenet_v2_035, dataset: patterns, mode: scratch}
""")
    return runner.run_one(suite.load(path).runs[0], {"device": "CPU: test"}, verbose=0)


def test_a_real_run_at_bn_momentum_0_999_scores_far_better_with_batch_statistics(bn_run):
    assert bn_run["status"] == "ok", bn_run.get("traceback")
    check = bn_run["batchnorm_check"]
    assert check["images"] == 256 and check["moving_accuracy"] <= 0.31  # at chance for 4 classes
    assert check["batch_accuracy"] >= check["moving_accuracy"] + 0.25
    (bn,) = named(bn_run, "batchnorm-statistics")
    assert bn.severity == "error" and bn.evidence["cause"]
    assert 0 < bn_run["input_pipeline"]["seconds_per_epoch"] < 1 and bn_run["input_pipeline"]["steps"] == 16
    assert all(e["load"] is None or "others_fraction" in e["load"] for e in bn_run["epochs"])
    assert schema.problems(bn_run) == []
