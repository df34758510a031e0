"""NVIDIA GPUs' clocks, temperature, power and throttling, read through NVML: the evidence that tells a GPU
slowed by heat or its power cap from a slower code path.

Read where `pynvml` (the nvidia-ml-py package) imports and NVML starts; anywhere else `read` returns None
and the record holds nothing about GPUs, so a machine without them (or without the package) is no error.
Each reading is instantaneous, except the violation counters: the nanoseconds NVML has held the clocks
down for power or heat since the driver loaded, so their difference over a span is the throttled time.
"""
from __future__ import annotations

import functools

# NVML's clocks-event (formerly throttle) reason bits that slow a busy GPU. Left out: idle (0x1), clocks
# pinned by the application or the display (0x2, 0x100), and sync boost (0x10, clocks matched across GPUs).
THROTTLE_REASONS = {0x4: "software power cap", 0x8: "hardware slowdown", 0x20: "software thermal slowdown",
                    0x40: "hardware thermal slowdown", 0x80: "hardware power brake"}
# NVML's perf policy numbers for nvmlDeviceGetViolationStatus.
VIOLATIONS = {"power": 0, "thermal": 1}
_CLOCK_SM = 1  # NVML_CLOCK_SM
_TEMPERATURE_GPU = 0  # NVML_TEMPERATURE_GPU


@functools.cache
def _nvml():
    """The started pynvml module, or None without the package, a driver or a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 -- ImportError, or NVMLError of any kind: no NVML here
        return None
    return pynvml


def read() -> list[dict] | None:
    """One reading per GPU, or None where NVML is not available."""
    nvml = _nvml()
    if nvml is None:
        return None
    return [_device(nvml, i) for i in range(nvml.nvmlDeviceGetCount())]


def _device(nvml, index: int) -> dict:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)

    def value(name: str, *args):
        """A reading this GPU or driver may not support: None then (older pynvml names differ too)."""
        fn = getattr(nvml, name, None)
        try:
            return fn(handle, *args) if fn else None
        except nvml.NVMLError:
            return None

    name = value("nvmlDeviceGetName")
    power, limit = value("nvmlDeviceGetPowerUsage"), value("nvmlDeviceGetEnforcedPowerLimit")
    reasons = value("nvmlDeviceGetCurrentClocksEventReasons")
    if reasons is None:
        reasons = value("nvmlDeviceGetCurrentClocksThrottleReasons")
    violations = {k: value("nvmlDeviceGetViolationStatus", policy) for k, policy in VIOLATIONS.items()}
    return {"index": index, "name": name.decode() if isinstance(name, bytes) else name,
            "sm_clock_mhz": value("nvmlDeviceGetClockInfo", _CLOCK_SM),
            "max_sm_clock_mhz": value("nvmlDeviceGetMaxClockInfo", _CLOCK_SM),
            "temperature_c": value("nvmlDeviceGetTemperature", _TEMPERATURE_GPU),
            "power_w": power / 1000 if power is not None else None,  # NVML reports milliwatts
            "power_limit_w": limit / 1000 if limit is not None else None,
            "throttle_reasons": [text for bit, text in THROTTLE_REASONS.items() if reasons and reasons & bit],
            "violation_ns": {k: v.violationTime if v is not None else None for k, v in violations.items()}}


def during(start: list[dict] | None, end: list[dict] | None) -> dict | None:
    """The record's `gpu`: both readings, and per GPU the seconds its clocks were held down in between."""
    if not start or not end:
        return None
    throttled = []
    for a, b in zip(start, end):
        spans = {k: (b["violation_ns"][k] - a["violation_ns"][k]) / 1e9 for k in VIOLATIONS
                 if None not in (a["violation_ns"][k], b["violation_ns"][k])}
        throttled.append({"index": a["index"], **spans})
    return {"start": start, "end": end, "throttled_seconds": throttled}
