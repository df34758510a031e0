"""Per-epoch timing: wall seconds of the training pass and of validation, on a monotonic clock.

Epoch 1 carries tracing and XLA compilation, so it is reported apart (phase "first") from the
steady-state epochs; so is the first epoch of a recipe's later stage (recipes.py), which compiles
again. Throughput is images / seconds of the training pass, never a mean of per-step rates.

The clock reads `time.perf_counter()` at three points only: epoch begin, validation begin
(`on_test_begin`) and epoch end. Each reading is preceded by `device_sync(model)`, which waits
until the device has finished the work already queued, so each span is work done, not work
dispatched. Without it the train/validation split is wrong on asynchronous backends (JAX, on a
CPU too; torch on a GPU): Keras dispatches the steps without waiting for them and converts their
logs on a worker thread, so when validation begins the device may still be running the last
training steps, and that tail would be counted as validation time. Keras's own conversion of the
logs at epoch end comes after the split is read. Under TensorFlow Keras converts every step's
logs on the main thread, which already waits for each step.

Beside each epoch's seconds the row keeps what else ran during it (load.epoch: others' and the hypervisor's
shares of the CPUs, the load average) and, where NVML reads GPUs, their clocks, heat, power and throttling
(gpu.py); both are read outside the timed spans, before the epoch's first reading and after its last.

The clock adds no per-batch hook: overriding `on_train_batch_end` makes Keras drop its
asynchronous callback dispatch and convert the logs on the host after every step, slowing the
very thing being measured. `measurement(backend)` says what a record's timings include.
"""
from __future__ import annotations

import math
import time

import keras

from . import gpu, load


def device_sync(model) -> None:
    """Block until the device has finished every step already dispatched for `model`."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        # Every step writes the whole model state, so once these buffers are ready, so is
        # every step queued before them. Blocking on a ready buffer copies nothing.
        values = [v.value for v in _state_variables(model)]
        jax.block_until_ready([x for x in values if isinstance(x, jax.Array) and not x.is_deleted()])
    elif backend == "tensorflow":
        # The metrics variables are scalars that the last step writes; reading them to the host
        # runs after that step in stream order, so it waits for that step on a GPU (on a CPU it has already run).
        for v in model.metrics_variables:
            keras.ops.convert_to_numpy(v)
    elif backend == "torch":
        import torch

        # CPU torch runs each op before returning; CUDA kernels are only queued.
        if torch.cuda.is_available():
            torch.cuda.synchronize()


def _state_variables(model):
    optimizer = getattr(model, "optimizer", None)
    return [*model.trainable_variables, *model.non_trainable_variables,
            *(optimizer.variables if optimizer is not None else ()), *model.metrics_variables]


_SYNC = {
    "jax": "jax.block_until_ready on all model, optimizer and metrics variables",
    "tensorflow": "metrics variables read to the host",
    "torch": "torch.cuda.synchronize() when CUDA is available (CPU torch is synchronous)",
}


def measurement(backend: str) -> dict:
    """What the epoch timings of a run on `backend` include, for the record's `execution`."""
    return {
        "clock": "time.perf_counter",
        "read_at": ["on_epoch_begin", "on_test_begin", "on_epoch_end"],
        "sync": _SYNC.get(backend, "none"),
        "per_batch_hook": False,
        # Keras's TensorFlow backend is not marked thread-safe, so its callback list converts
        # every step's logs to numpy on the main thread: one device-to-host wait per step,
        # inside the timed training pass. JAX and torch convert them on a worker thread.
        "per_step_host_sync": backend == "tensorflow",
    }


class EpochClock(keras.callbacks.Callback):
    def __init__(self, train_images: int, stop_requested=lambda: False):
        super().__init__()
        self.train_images = train_images
        self.stop_requested = stop_requested
        self.rows: list[dict] = []
        # The raw perf_counter readings behind each row, (begin, validation begin or None, end):
        # they line up with other traces taken on the same clock.
        self.readings: list[tuple[float, float | None, float]] = []
        self.diverged = False
        self.stage = 1  # the recipe's stage the coming epochs belong to (the runner sets it per fit)
        self._fit_started = True

    def on_train_begin(self, logs=None):
        self._fit_started = True
        # fit clears stop_training as it starts: a stop asked for just before would be lost.
        self.model.stop_training = self.stop_requested()

    def _now(self) -> float:
        # `self.model` also reattaches the JAX state to the model's variables, which is what
        # device_sync waits on.
        device_sync(self.model)
        return time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._load = load.mark()
        # Work queued before the epoch (initialisation, weight loading, the previous epoch's
        # callbacks) is not the epoch's.
        self._start = self._now()
        self._val_start = None

    def on_test_begin(self, logs=None):
        self._val_start = self._now()
        # A stop during training must not wait for a whole validation pass (evaluate clears the flag too).
        self.model.stop_evaluating = self.stop_requested()

    def on_epoch_end(self, epoch, logs=None):
        end = self._now()
        val_start = self._val_start or end
        train_s, val_s = val_start - self._start, end - val_start
        self.readings.append((self._start, self._val_start, end))
        logs = logs or {}
        self.rows.append({
            "epoch": epoch + 1,
            "stage": self.stage,
            "phase": "first" if self._fit_started else "steady",
            "loss": logs.get("loss"),
            "accuracy": logs.get("accuracy"),
            "val_loss": logs.get("val_loss"),
            "val_accuracy": logs.get("val_accuracy"),
            "epoch_seconds": end - self._start,
            "train_seconds": train_s,
            "val_seconds": val_s,
            "train_images": self.train_images,
            "images_per_second": self.train_images / train_s if train_s > 0 else None,
            "load": load.epoch(self._load, load.mark()),
            **({"gpu": gpus} if (gpus := gpu.read()) else {}),
        })
        self._fit_started = False
        # Checked per epoch, not per batch: a per-batch hook would sync the device every step
        # and slow the very thing being measured.
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged = True
        if self.diverged or self.stop_requested():
            self.model.stop_training = True
