"""Peak memory of one run: host RSS, and the accelerator's where the backend exposes it.

Host: a daemon thread samples the resident set size from /proc/self/statm. getrusage's
ru_maxrss alone cannot serve: it is the peak over the process's lifetime, so in a suite every run
after the largest would report the largest. It still sharpens the sample: if ru_maxrss rose during
the run, the run set a new lifetime peak and ru_maxrss is that peak exactly, spikes between two
samples included.

Accelerator, summed over every device of the process: TensorFlow's get_memory_info (peak since
reset_memory_stats), torch's max_memory_allocated per device (likewise). JAX cannot reset its
peak_bytes_in_use, which is the peak over the process's lifetime, so in a suite every run after the
largest would report the largest: the same thread samples bytes_in_use, and the lifetime peak is
taken only when it rose during the run (then this run set it), as for ru_maxrss above. CPU devices
expose none: None.
"""
from __future__ import annotations

import os
import resource
import sys
import threading

import keras

INTERVAL_S = 0.05  # a read of /proc/self/statm costs microseconds: 20 a second is free
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None  # not Linux


def max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB, macOS bytes


class Peak:
    """`with Peak() as p: ...` (or p.start() ... p.stop()), then `p.record()` for the run's record."""

    def __init__(self, interval_s: float = INTERVAL_S):
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="tlbench-rss", daemon=True)
        self.start_rss = self.peak_rss = None
        self.accelerator: dict | None = None
        self._jax_devices: list = []
        self.jax_sampled_peak = self._jax_lifetime_before = None

    def _sample(self):
        while not self._stop.wait(self.interval_s):
            self._update(rss_bytes())
            self._update_jax()

    def _update_jax(self):
        if self._jax_devices:
            in_use = sum((d.memory_stats() or {}).get("bytes_in_use", 0) for d in self._jax_devices)
            self.jax_sampled_peak = max(self.jax_sampled_peak or 0, in_use)

    def _update(self, rss):
        if rss is not None:
            self.peak_rss = max(self.peak_rss or 0, rss)

    def start(self) -> "Peak":
        self._lifetime_before = max_rss_bytes()
        self.start_rss = rss_bytes()
        self._update(self.start_rss)
        try:
            _reset_accelerator()
            self._jax_devices = _jax_accelerators()
            self._jax_lifetime_before = _jax_lifetime_peak(self._jax_devices)
            self._update_jax()
        except Exception:  # noqa: BLE001 -- statistics must never fail a run; stop() says what is known
            pass
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        self._update(rss_bytes())
        lifetime = max_rss_bytes()
        if lifetime > self._lifetime_before:
            self.peak_rss = max(self.peak_rss or 0, lifetime)
        try:
            self._update_jax()
            self.accelerator = accelerator_peak() if not self._jax_devices else self._jax_peak()
        except Exception as e:  # noqa: BLE001 -- statistics must never fail a run
            self.accelerator = {"accelerator_peak_bytes": None,
                                "accelerator_peak_source": f"unavailable ({type(e).__name__}: {e})"}

    def _jax_peak(self) -> dict:
        lifetime = _jax_lifetime_peak(self._jax_devices)
        if lifetime is not None and lifetime > (self._jax_lifetime_before or 0):
            return {"accelerator_peak_bytes": lifetime,
                    "accelerator_peak_source": "jax peak_bytes_in_use, which rose during this run (so it is this run's)"}
        return {"accelerator_peak_bytes": self.jax_sampled_peak,
                "accelerator_peak_source": f"jax bytes_in_use sampled every {self.interval_s} s during this run "
                                           "(an earlier run set the process's lifetime peak)"}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    def record(self) -> dict:
        return {"host_peak_rss_bytes": self.peak_rss, "host_start_rss_bytes": self.start_rss,
                "host_sample_interval_s": self.interval_s, **(self.accelerator or {})}


def _jax_accelerators() -> list:
    if keras.backend.backend() != "jax":
        return []
    import jax

    return [d for d in jax.local_devices() if d.platform != "cpu" and d.memory_stats()]


def _jax_lifetime_peak(devices: list) -> int | None:
    if not devices:
        return None
    return sum(d.memory_stats().get("peak_bytes_in_use", 0) for d in devices)


def _reset_accelerator() -> None:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        for i, _ in enumerate(tf.config.list_logical_devices("GPU")):
            tf.config.experimental.reset_memory_stats(f"GPU:{i}")
    elif backend == "torch":
        import torch

        for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
            torch.cuda.reset_peak_memory_stats(i)


def accelerator_peak() -> dict:
    """Peak accelerator bytes in use under TensorFlow or torch (summed over devices), with how it was read;
    None on CPU. JAX's is sampled by Peak."""
    backend = keras.backend.backend()
    peak, how = None, None
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            peak = sum(tf.config.experimental.get_memory_info(f"GPU:{i}")["peak"] for i in range(len(gpus)))
            how = "tf.config.experimental.get_memory_info peak since the run started"
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            peak = sum(torch.cuda.max_memory_allocated(i) for i in range(torch.cuda.device_count()))
            how = "torch.cuda.max_memory_allocated since the run started, summed over devices"
    return {"accelerator_peak_bytes": peak, "accelerator_peak_source": how}
