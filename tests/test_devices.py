"""Data parallel within a run (`devices:`), on two virtual CPU devices, and the table's scaling column.

Each backend runs in a child process, since its devices are fixed when it initialises: JAX splits the host
into two devices by XLA_FLAGS in the child's environment; TensorFlow by a logical device configuration that
the child script sets before anything else. The child runs the real run_one twice on the same data and seed,
on one device and on two, with a probe (a callback of run_one's own) that reads what each device did, and
prints the records and the probe's findings as JSON.

Run as a script, this file measures the current backend.
"""
import dataclasses
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tlbench, unmarked

ROOT = Path(__file__).resolve().parent.parent

SUITE = """\
name: t
defaults: {input_size: 32, weights: none, train_size: 32, val_size: 32, epochs: 2, batch_size: 8,
           learning_rate: 0.003, head: {dense: []}, cut: early}
datasets: {patterns: {type: synthetic, classes: 4, noise: 10.0}}
matrix: {backbone: mobilenet_v2_035, dataset: patterns, mode: unfrozen, devices: [1, 2]}
"""
TRAIN_SIZE, VAL_SIZE, BATCH = 32, 32, 8


def _split_host() -> None:
    """Two logical CPU devices, before TensorFlow initialises (the test sets JAX's by XLA_FLAGS)."""
    if os.environ.get("KERAS_BACKEND") == "tensorflow":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


def _probe():
    """A callback that reads, where each variable lives and, under TensorFlow, how many images each replica's
    loss tracker counted in the epoch (read before validation resets it)."""
    import keras

    class Probe(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.found = {"replica_images": [], "variable_devices": []}

        def on_test_begin(self, logs=None):
            tracker = self.model._loss_tracker.variables[-1]  # count: images, weighted by batch size
            if hasattr(tracker.value, "values"):  # a SyncOnReadVariable: one copy per replica
                self.found["replica_images"].append([float(v.numpy()) for v in tracker.value.values])

        def on_train_end(self, logs=None):
            self.found["variable_devices"] = sorted({d for v in self.model.trainable_variables
                                                     for d in _devices_of(v.value)})

    return Probe()


def _devices_of(value) -> list[str]:
    if hasattr(value, "addressable_shards"):  # a JAX array
        return [f"{d.platform}:{d.id}" for d in value.devices()]
    # TensorFlow's: a mirrored variable has a copy per device
    return [v.device for v in value.values] if hasattr(value, "values") else [value.device]


def _watch_input_shards(seen: list) -> None:
    """Under JAX, note how each input batch Keras hands the step is split over the devices."""
    import keras

    if keras.backend.backend() != "jax":
        return
    from keras.src.backend.jax import distribution_lib

    original = distribution_lib.distribute_data_input

    def watched(batch, layout, batch_dim_name):
        out = original(batch, layout, batch_dim_name)
        seen.append(sorted((f"{s.device.platform}:{s.device.id}", s.data.shape[0]) for s in out.addressable_shards))
        return out

    distribution_lib.distribute_data_input = watched


def _measure() -> dict:
    _split_host()
    import keras

    sys.path.insert(0, str(ROOT))
    from bench import console, runner, suite

    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"tlbench-devices-{os.getpid()}.yaml"
    path.write_text(SUITE)
    runs = suite.load(path).runs
    path.unlink()
    environment = console.capture_environment()
    shards: list = []
    _watch_input_shards(shards)
    out = {}
    for config in [*runs, dataclasses.replace(runs[0], devices=4)]:
        probe, before = _probe(), len(shards)
        record = runner.run_one(config, environment, verbose=0, callbacks=(probe,))
        out[str(config.devices or 1)] = {"record": record, **probe.found, "input_shards": shards[before:]}
    out["left_set"] = keras.distribution.distribution() is not None if keras.backend.backend() == "jax" else False
    return {"backend": keras.backend.backend(), "runs": out}


@functools.cache
def _results(backend: str) -> dict:
    pytest.importorskip(backend, reason=f"the {backend} backend is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    p = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["backend"] == backend
    return got


BACKENDS = ["tensorflow", "jax"]
NAMES = {"tensorflow": ["/device:CPU:0", "/device:CPU:1"], "jax": ["cpu:0", "cpu:1"]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_two_device_run_records_its_devices_and_one_device_records_stay_as_before(backend):
    runs = _results(backend)["runs"]
    one, two = runs["1"]["record"], runs["2"]["record"]
    assert (one["status"], two["status"]) == ("ok", "ok")
    assert "devices" not in one and one["config"]["devices"] is None
    strategy = {"tensorflow": "tf MirroredStrategy", "jax": "jax DataParallel"}[backend]
    assert two["devices"] == {"count": 2, "list": NAMES[backend], "strategy": strategy}
    assert runs["left_set"] is False  # the suite's next run is not distributed


@pytest.mark.parametrize("backend", BACKENDS)
def test_both_devices_received_work(backend):
    runs = _results(backend)["runs"]
    two = runs["2"]
    # The model's variables have a copy on each device, updated by each device's own step.
    variables = two["variable_devices"]
    assert len(variables) == 2 and all(v.endswith(n.split(":", 1)[-1]) for v, n in zip(variables, NAMES[backend]))
    assert len(runs["1"]["variable_devices"]) == 1
    if backend == "jax":  # every batch fit handed the step was split 4 + 4 over the two devices
        train_batches = 2 * TRAIN_SIZE // BATCH
        assert len(two["input_shards"]) >= train_batches
        assert all(shards == [["cpu:0", BATCH // 2], ["cpu:1", BATCH // 2]] for shards in two["input_shards"])
    else:  # each replica's loss tracker counted half of every epoch's training images
        assert two["replica_images"] == [[TRAIN_SIZE / 2, TRAIN_SIZE / 2]] * 2


# JAX shards one computation (GSPMD): the same arithmetic as on one device up to the order of a sum, so the
# runs agree to within one of the 32 validation images. TensorFlow's replicas each normalise by the BatchNorm
# statistics of their own 4 images, so training differs; the band is two binomial standard deviations of an
# accuracy near 30 % over 32 images (2 x 0.08).
BAND = {"jax": 1 / VAL_SIZE, "tensorflow": 0.16}


@pytest.mark.parametrize("backend", BACKENDS)
def test_accuracy_matches_the_one_device_run(backend):
    runs = _results(backend)["runs"]
    one, two = ([e["val_accuracy"] for e in runs[n]["record"]["epochs"]] for n in ("1", "2"))
    assert len(one) == len(two) == 2
    assert all(abs(a - b) <= BAND[backend] + 1e-9 for a, b in zip(one, two)), (one, two)


@pytest.mark.parametrize("backend", BACKENDS)
def test_more_devices_than_there_are_is_a_failed_record_that_says_so(backend):
    record = _results(backend)["runs"]["4"]["record"]
    assert record["status"] == "failed" and record["epochs"] == [] and "traceback" not in record
    assert record["error"] == (f"UserError: devices: 4 asks for 4 devices, but {backend} sees 2 here: "
                               + ", ".join(NAMES[backend]))


def test_jax_refuses_a_last_batch_that_does_not_split():
    from bench.distribute import Placement
    from bench.errors import UserError

    placement = Placement("jax", ["cpu:0", "cpu:1"], "jax DataParallel")
    placement.check_batches(8, {"train_size": 34, "val_size": 32})  # a last batch of 2: one image each
    with pytest.raises(UserError, match="train_size 33 leaves a last batch of 1 images, which JAX cannot split"):
        placement.check_batches(8, {"train_size": 33, "val_size": 32})
    with pytest.raises(UserError, match="batch_size 6 does not divide over 4 devices"):
        Placement("tensorflow", ["a", "b", "c", "d"], "tf MirroredStrategy").check_batches(6, {})


def test_validate_refuses_what_cannot_run_data_parallel(write_suite):
    path = write_suite("""\
        name: t
        defaults: {input_size: 32, weights: none, batch_size: 6}
        matrix: {backbone: mobilenet_v2_035, dataset: synthetic, mode: frozen, backend: [tensorflow, torch]}
        overrides:
          - {match: {backend: tensorflow}, set: {devices: 4}}
          - {match: {backend: torch}, set: {devices: all, batch_size: 8}}
        """)
    p = tlbench("validate", path, "--set", "epochs=1")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "devices: 4 splits each batch over 4 devices: batch_size 6 is not a multiple of 4" in p.stderr
    assert ("devices: all runs data parallel on backend tensorflow or jax, not torch; leave devices unset "
            "(one device) for torch") in p.stderr
    bad = tlbench("validate", path, "--set", "devices=0")
    assert bad.returncode == 2 and "expected a positive integer or 'all', got 0" in bad.stderr


def _parallel(record: dict, devices: int, train_seconds: float, **config) -> dict:
    """A golden record as if run on `devices` devices, its steady epochs taking `train_seconds` each."""
    out = json.loads(json.dumps(record))
    out["config"].update(devices=devices, **config)
    out["run_id"] = f"{out['run_id']}-d{devices}"
    out["devices"] = {"count": devices, "list": [f"cpu:{i}" for i in range(devices)], "strategy": "jax DataParallel"}
    for e in out["epochs"]:
        if e["phase"] == "steady":
            e["train_seconds"] = e["epoch_seconds"] = train_seconds
    return out


def test_table_shows_images_per_second_per_device_and_scaling_efficiency(golden):
    runs = golden / "runs"
    for path in sorted(runs.glob("*-frozen-*.json")):  # steady epochs: 1,000 images in 4.0 s, 250 img/s
        record = json.loads(path.read_text())
        # 1,000 images in 2.5 s on 2 devices: 400 img/s, 200 per device, 80 % of one device's 250
        (runs / f"{path.stem}-d2.json").write_text(json.dumps(_parallel(record, 2, 2.5)))
        # no one-device run of this batch size: per device only
        (runs / f"{path.stem}-d4.json").write_text(json.dumps(_parallel(record, 4, 2.0, batch_size=64)))
    p = tlbench("table", golden)
    assert p.returncode == 0, p.stderr
    header = next(line for line in p.stdout.splitlines() if line.startswith("| Training Mode"))
    assert header.endswith("| Per device (scaling) |")
    blocks = unmarked(p.stdout).split("**mobilenet_v2")
    two = next(b for b in blocks if "devices=2" in b.split("\n")[0])
    four = next(b for b in blocks if "devices=4" in b.split("\n")[0])
    one = next(b for b in blocks if "devices=1" in b.split("\n")[0])
    assert "| Frozen weights |" in two and "| 200 img/s on 2 devices (80 %) |" in two
    assert "| 125 img/s on 4 devices (—) |" in four
    assert "| 250 img/s |" in one


if __name__ == "__main__":
    print(json.dumps(_measure(), default=str))
