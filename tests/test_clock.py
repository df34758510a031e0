"""EpochClock against ground truth: models whose steps cost a known, injected amount.

Two injected costs, because they catch different faults:

* sleep: a layer sleeps inside the compiled step (`jax.pure_callback` under JAX, `tf.numpy_function`
  under TensorFlow), SLEEPS[backend] per training and per validation batch, and notes
  on perf_counter, the clock's own time base, when each sleep ran. That gives exact costs and
  timestamps, but JAX's CPU client runs a program with a host callback synchronously (jax 0.10),
  so no step is left queued and a clock without a device sync passes this case too.
* compute: a layer runs a chain of matmuls; nothing leaves the device, so JAX dispatches the steps
  asynchronously and the host runs ahead of them. A clock that reads the time without waiting for
  the device then counts the training steps still queued as validation time. The ground truth is
  when each step's logs became readable (an `async_safe` observer: Keras converts the logs on a
  worker thread, which waits for the step, and keeps its asynchronous dispatch).

Keras fixes its backend at import: a backend other than this process's runs this file as a script
in a child process (KERAS_BACKEND set), which prints the measurements as JSON.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

TRAIN_BATCHES, VAL_BATCHES, BATCH, EPOCHS = 8, 4, 4, 3
# (training, validation) seconds per batch. What Keras itself does on the host per pass (the tf.data
# iterator it makes, a host round trip per step) is real time in the pass, but not injected: on a
# 2-core CPU under TensorFlow about 60 ms per training pass and 40 ms per validation pass, under JAX a
# few ms. TensorFlow's sleeps are longer so that this overhead stays inside the 5 % the clock must meet.
SLEEPS = {"tensorflow": (0.2, 0.3), "jax": (0.1, 0.125)}
DIM, TRAIN_MATMULS, VAL_MATMULS = 512, 12, 6
SLACK = 0.05


def _fit(cost_layer, observers=()) -> dict:
    import keras
    import numpy as np

    from bench.clock import EpochClock

    class Wall(keras.callbacks.Callback):
        """An outside clock: listed first it reads at epoch begin, listed last at epoch end."""

        def __init__(self):
            super().__init__()
            self.begin, self.end = [], []

        def on_epoch_begin(self, epoch, logs=None):
            self.begin.append(time.perf_counter())

        def on_epoch_end(self, epoch, logs=None):
            self.end.append(time.perf_counter())

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=((TRAIN_BATCHES + VAL_BATCHES) * BATCH, 4)).astype("float32")
    y = rng.integers(0, 3, size=len(x))
    split = TRAIN_BATCHES * BATCH
    model = keras.Sequential([keras.Input((4,)), cost_layer, keras.layers.Dense(3, activation="softmax")])
    tensorflow = keras.backend.backend() == "tensorflow"
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=not tensorflow)  # tf.numpy_function cannot be XLA-compiled
    clock, first, last = EpochClock(split), Wall(), Wall()
    start = time.perf_counter()
    model.fit(x[:split], y[:split], batch_size=BATCH, epochs=EPOCHS, validation_data=(x[split:], y[split:]),
              shuffle=False, callbacks=[first, clock, *observers, last], verbose=0)
    return {"rows": clock.rows, "readings": clock.readings, "fit_seconds": time.perf_counter() - start,
            "wall": list(zip(first.begin, last.end))}


def _sleep_case() -> dict:
    import keras

    backend = keras.backend.backend()
    sleeps: list[tuple[bool, float, float]] = []

    class Sleep(keras.layers.Layer):
        def call(self, x, training=False):
            seconds = SLEEPS[backend][0] if training else SLEEPS[backend][1]

            def host(a):
                t0 = time.perf_counter()
                time.sleep(seconds)
                sleeps.append((bool(training), t0, time.perf_counter()))
                return a

            # The input passes through the host function, so nothing downstream of this layer can
            # run, and the step cannot finish, before the sleep has.
            if backend == "jax":
                import jax
                return jax.pure_callback(host, jax.ShapeDtypeStruct(x.shape, x.dtype), x)
            if backend == "tensorflow":
                import tensorflow as tf
                y = tf.numpy_function(host, [x], x.dtype, stateful=True)
                y.set_shape(x.shape)
                return y
            return host(x)

    return {**_fit(Sleep()), "sleeps": sleeps}


def _compute_case() -> dict:
    import keras
    from keras import ops

    class Matmuls(keras.layers.Layer):
        def build(self, input_shape):
            self.w = self.add_weight(shape=(DIM, DIM), initializer="glorot_uniform", trainable=False)

        def call(self, x, training=False):
            h = ops.ones((DIM, DIM)) * ops.mean(x)
            h = ops.fori_loop(0, TRAIN_MATMULS if training else VAL_MATMULS,
                              lambda i, h: ops.tanh(ops.matmul(h, self.w)), h)
            # Tied to the output so that the chain is neither dropped nor run after the step.
            return x + 1e-30 * ops.sum(h)

    class StepDone(keras.callbacks.Callback):
        async_safe = True  # keeps Keras's asynchronous dispatch; this runs on its worker threads

        def __init__(self):
            super().__init__()
            self.epoch, self.done = 0, []

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            self.done.append((self.epoch, True, time.perf_counter()))

        def on_test_batch_end(self, batch, logs=None):
            self.done.append((self.epoch, False, time.perf_counter()))

    observer = StepDone()
    return {**_fit(Matmuls(), [observer]), "done": observer.done}


def _measure() -> dict:
    import keras

    from bench.clock import measurement

    backend = keras.backend.backend()
    return {"backend": backend, "measurement": measurement(backend), "sleep": _sleep_case(),
            "compute": _compute_case()}


@functools.cache
def _results(backend: str) -> dict:
    import keras

    if keras.backend.backend() == backend:
        return _measure()
    pytest.importorskip(backend, reason=f"the {backend} backend is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    p = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    got = json.loads(p.stdout.strip().splitlines()[-1])
    assert got["backend"] == backend
    return got


def _summary(row) -> str:
    return (f"epoch {row['epoch']}: train {row['train_seconds']:.4f} s, val {row['val_seconds']:.4f} s, "
            f"epoch {row['epoch_seconds']:.4f} s")


def _check_rows_match_readings(got):
    rows, readings = got["rows"], got["readings"]
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1)) and len(readings) == EPOCHS
    for r, (begin, val_begin, end) in zip(rows, readings):
        assert r["train_seconds"] == pytest.approx(val_begin - begin, abs=1e-9)
        assert r["val_seconds"] == pytest.approx(end - val_begin, abs=1e-9)
        assert r["epoch_seconds"] == pytest.approx(end - begin, abs=1e-9)
        assert r["images_per_second"] == pytest.approx(TRAIN_BATCHES * BATCH / r["train_seconds"])


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_clock_measures_the_injected_sleeps(backend):
    got = _results(backend)["sleep"]
    _check_rows_match_readings(got)
    rows, sleeps = got["rows"], got["sleeps"]
    per_epoch = TRAIN_BATCHES + VAL_BATCHES
    assert len(sleeps) == EPOCHS * per_epoch, "the injected layer did not run once per batch"
    epochs = [sleeps[i:i + per_epoch] for i in range(0, len(sleeps), per_epoch)]
    train_cost, val_cost = TRAIN_BATCHES * SLEEPS[backend][0], VAL_BATCHES * SLEEPS[backend][1]

    steady = [e for e in range(EPOCHS) if rows[e]["epoch"] >= 2]
    for e in steady:
        calls, r = epochs[e], rows[e]
        assert [t for t, _, _ in calls] == [True] * TRAIN_BATCHES + [False] * VAL_BATCHES
        begin, val_begin, end = got["readings"][e]
        # Each reading falls between the sleeps it separates: every training sleep lies in the
        # training span, every validation sleep in the validation span.
        assert begin <= calls[0][1] and calls[TRAIN_BATCHES - 1][2] <= val_begin <= calls[TRAIN_BATCHES][1], \
            _summary(r)
        assert calls[-1][2] <= end, _summary(r)
        assert r["train_seconds"] >= train_cost and r["val_seconds"] >= val_cost, _summary(r)
        # The outside clock brackets the epoch, and the epoch holds the device's work for it.
        wall_begin, wall_end = got["wall"][e]
        assert wall_begin <= begin and end <= wall_end
        assert calls[-1][2] - calls[0][1] <= r["epoch_seconds"]

    # Nothing else in the spans but Keras's own host work: judged on the best steady epoch, so that
    # a stall of the host (a garbage collection, another process) in one epoch does not fail it.
    # A clock fault (queued training counted as validation, a costly sync) shows in every epoch.
    slack = 1 + SLACK
    assert min(rows[e]["train_seconds"] for e in steady) <= slack * train_cost, [_summary(rows[e]) for e in steady]
    assert min(rows[e]["val_seconds"] for e in steady) <= slack * val_cost, [_summary(rows[e]) for e in steady]
    # The steady epochs add up to the outside clock's.
    wall = sum(got["wall"][e][1] - got["wall"][e][0] for e in steady)
    assert sum(rows[e]["epoch_seconds"] for e in steady) == pytest.approx(wall, rel=0.02)
    assert sum(r["epoch_seconds"] for r in rows) <= got["fit_seconds"]


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_clock_waits_for_training_steps_still_queued_on_the_device(backend):
    got = _results(backend)["compute"]
    _check_rows_match_readings(got)
    rows, done = got["rows"], got["done"]
    assert len(done) == EPOCHS * (TRAIN_BATCHES + VAL_BATCHES)
    for e, (r, (begin, val_begin, end)) in enumerate(zip(rows, got["readings"])):
        train_done = max(t for epoch, training, t in done if epoch == e and training)
        val_done = max(t for epoch, training, t in done if epoch == e and not training)
        # The observer's thread wakes on the same event as the clock's wait, a little later or
        # sooner: a ms or so either way. A clock that does not wait is early by the queued steps.
        assert val_begin >= train_done - 0.02, f"{_summary(r)}; validation began {train_done - val_begin:.4f} s " \
                                               "before the last training step finished"
        assert end >= val_done - 0.02, _summary(r)


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_measurement_says_what_the_timings_include(backend):
    from bench.clock import measurement

    m = measurement(backend)
    assert m["clock"] == "time.perf_counter" and m["per_batch_hook"] is False
    assert m["read_at"] == ["on_epoch_begin", "on_test_begin", "on_epoch_end"]
    assert m["per_step_host_sync"] is (backend == "tensorflow")
    assert m["sync"] != "none"
    json.dumps(m)  # goes into the record as is


def test_clock_has_no_per_batch_hook_so_keras_keeps_async_dispatch():
    import keras

    from bench.clock import EpochClock

    for hook in ("on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end",
                 "on_test_batch_begin", "on_test_batch_end"):
        assert getattr(EpochClock, hook) is getattr(keras.callbacks.Callback, hook), hook


if __name__ == "__main__":
    print(json.dumps(_measure()))
