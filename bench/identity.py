"""When are two runs the same run? When nothing that could change their numbers differs.

A record is reused (a suite re-run skips it) only if its key matches. The key hashes the parts below,
and the record keeps the parts themselves (`key_parts`), so a re-run can say which part changed:

  config      the resolved run configuration (its digest)
  weights     the exact weights (file SHA-256, or the source name)
  code        tlbench's code on the run path (RUN_PATH): not the plots, tables, report or CLI, whose
              edits change no measurement and must not cost hours of re-measuring
  versions    Keras, numpy, Python, and the run's own backend: TensorFlow, or JAX and jaxlib, or torch, with
              the accelerator runtimes it loads (jax CUDA plugins, NVIDIA libraries); not the other backends'
              packages, which the run never imports (a machine with or without jax measures a TensorFlow run alike)
  platform    the Keras backend, the CUDA/cuDNN build, the NVIDIA driver
  env         environment variables that change numerics, kernels or threads (XLA_FLAGS, ...)
  hardware    device, accelerator count, usable CPU cores, and a per-machine id kept in ~/.cache/tlbench

The record's file name stays the readable, config-only run id.
"""
from __future__ import annotations

import hashlib
import json
import re
from functools import lru_cache
from pathlib import Path

from .config import RunConfig

_PACKAGE_DIR = Path(__file__).resolve().parent
# The modules whose code can change what a run measures: building the data, the model and its
# weights, training, timing and the record's measured fields. tests/test_identity.py checks that
# every bench module a run imports is either here or in NOT_MEASURING.
RUN_PATH = ("backbones.py", "clock.py", "config.py", "datasets.py", "distribute.py", "features.py", "finetune.py",
            "flops.py", "gpu.py", "inputs.py", "load.py", "memory.py", "model.py", "modes.py", "numpy_pickle.py",
            "preprocessing.py", "recipes.py", "runner.py", "torch_pickle.py", "torchvision_file.py",
            "torchvision_weights.py", "weights.py")
# Imported on the way to a run, but changing none of its numbers: naming, bookkeeping and errors.
NOT_MEASURING = ("__init__.py", "__main__.py", "cli.py", "console.py", "environment.py", "errors.py", "identity.py",
                 "interrupt.py", "progress.py", "registry.py", "schema.py", "shard.py", "store.py", "suite.py",
                 "ray_executor.py",  # sends runs to Ray workers; each measures with the modules above
                 # the suite file, read and expanded into runs (suite.py)
                 "crosscheck.py", "expand.py", "matrix.py", "overrides.py", "settings.py", "suite_yaml.py")


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the run-path modules' source: changes with code that can change a measurement, nothing else."""
    h = hashlib.sha256()
    for name in RUN_PATH:
        h.update(name.encode() + b"\0" + (_PACKAGE_DIR / name).read_bytes())
    return h.hexdigest()[:16]


# The Keras backends. The distributions that only one of them imports start with its name (jaxlib, the
# jax-cuda12-plugin, tensorflow-metal); the others (keras, numpy, nvidia-* CUDA libraries) any run may load.
BACKENDS = ("tensorflow", "jax", "torch")


def _versions(env: dict) -> dict:
    """The versions a run of env's backend loads: not pandas or tlbench, nor another backend's packages."""
    others = tuple(b for b in BACKENDS if b != env.get("keras_backend"))
    found = {**env.get("versions", {}), **env.get("runtimes", {})}
    return {k: v for k, v in found.items() if k not in ("pandas", "tlbench") and not k.startswith(others)}


def key_parts(config: RunConfig, environment: dict, weights: dict) -> dict:
    env = environment
    return {
        "config": config.digest,
        "weights": weights.get("sha256") or weights.get("source"),
        "code": env.get("code_version"),
        "versions": {**_versions(env), "python": env.get("python")},
        "platform": {"backend": env.get("keras_backend"), "build": env.get("backend_build") or {},
                     "nvidia_driver": env.get("nvidia_driver")},
        "env": env.get("numerics_env", {}),
        "hardware": {"device": env.get("device"), "accelerators": env.get("accelerator_count"),
                     "cores": env.get("cpu_count"), "machine_id": env.get("machine_id")},
    }


def run_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def changes(old: dict | None, new: dict) -> list[str]:
    """What differs between an earlier record's key parts and this run's, in words ('XLA_FLAGS: unset -> ...')."""
    if not old:
        return ["the earlier record predates per-part keys, so what changed is unknown"]
    out = []
    for part in new:
        a, b = old.get(part), new[part]
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    out.append(f"{part}.{k}: {_show(a.get(k))} -> {_show(b.get(k))}")
        else:
            out.append(f"{part}: {_show(a)} -> {_show(b)}")
    return out


def _show(v) -> str:
    if v is None:
        return "unset"
    return v[:12] if isinstance(v, str) and re.fullmatch(r"[0-9a-f]{16,}", v) else str(v)  # hashes: shortened
