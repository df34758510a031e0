"""pytest-benchmark setup for tlbench's step timings.

Two things pytest-benchmark does not know on its own:
- which accelerator and software produced a timing: added to every saved run's machine_info
  (pytest-benchmark warns on --benchmark-compare when machine_info differs);
- that timings compare only on the same accelerator model: unless --benchmark-storage is given,
  saved runs go to .benchmarks/<tlbench machine id>/ (see bench/baseline.py), so --benchmark-compare
  finds the latest run of *this* accelerator, never a CPU run from the same OS and Python.
"""
from __future__ import annotations

import functools

import pytest

DEFAULT_STORAGE = "file://./.benchmarks"


@functools.cache
def _environment() -> dict:
    from bench.environment import capture

    return capture()


def _machine_id() -> str:
    from bench.baseline import machine_id

    return machine_id(_environment())


@pytest.hookimpl(tryfirst=True)  # before pytest-benchmark's own pytest_configure opens the storage
def pytest_configure(config):
    if getattr(config.option, "benchmark_storage", None) == DEFAULT_STORAGE:
        config.option.benchmark_storage = f"{DEFAULT_STORAGE}/{_machine_id()}"


def pytest_benchmark_update_machine_info(config, machine_info):
    env = _environment()
    machine_info.update({
        "accelerator": env["accelerators"][0]["name"] if env["accelerators"] else None,
        "accelerator_count": env["accelerator_count"],
        "device": env["device"],
        "keras_backend": env["keras_backend"],
        "keras_version": env["versions"].get("keras"),
        "tensorflow_version": env["versions"].get("tensorflow"),
        "nvidia_driver": env["nvidia_driver"],
        "tlbench_machine_id": _machine_id(),
    })
