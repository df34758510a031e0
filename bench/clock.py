"""Per-epoch timing: wall seconds of the training pass and of validation, on a monotonic clock.

Epoch 1 carries tracing and XLA compilation, so it is reported apart (phase "first") from the
steady-state epochs. Throughput is images / seconds of the training pass, never a mean of
per-step rates. Keras turns the logs into Python floats at epoch end, which waits for the
device, so asynchronous backends are timed correctly. The clock adds no per-batch hook.
"""
from __future__ import annotations

import math
import time

import keras


class EpochClock(keras.callbacks.Callback):
    def __init__(self, train_images: int, stop_requested=lambda: False):
        super().__init__()
        self.train_images = train_images
        self.stop_requested = stop_requested
        self.rows: list[dict] = []
        self.diverged = False

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._val_start = None

    def on_test_begin(self, logs=None):
        self._val_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = time.perf_counter()
        val_start = self._val_start or end
        train_s, val_s = val_start - self._start, end - val_start
        logs = logs or {}
        self.rows.append({
            "epoch": epoch + 1,
            "phase": "first" if epoch == 0 else "steady",
            "loss": logs.get("loss"),
            "accuracy": logs.get("accuracy"),
            "val_loss": logs.get("val_loss"),
            "val_accuracy": logs.get("val_accuracy"),
            "epoch_seconds": end - self._start,
            "train_seconds": train_s,
            "val_seconds": val_s,
            "train_images": self.train_images,
            "images_per_second": self.train_images / train_s if train_s > 0 else None,
        })
        # Checked per epoch, not per batch: a per-batch hook would sync the device every step
        # and slow the very thing being measured.
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged = True
        if self.diverged or self.stop_requested():
            self.model.stop_training = True
