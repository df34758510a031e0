"""What machine and software produced a record.

Versions are read from package metadata, so capturing them never imports a backend that the
run does not use. Only the accelerator query touches the active backend.
"""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from .identity import code_version

PROJECT_ROOT = Path(__file__).resolve().parent.parent
_PACKAGES = ("keras", "tensorflow", "jax", "jaxlib", "torch", "numpy", "pandas", "tlbench")


def _version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _run(cmd: list[str], cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def machine_id() -> str:
    """A random id made on first use and kept in the user's cache: tells machines apart where hostnames
    and CPU names do not (VMs and containers often share both), so a record is reused on its own machine only."""
    import uuid

    path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tlbench" / "machine-id"
    try:
        return path.read_text().strip()
    except OSError:
        pass
    new = uuid.uuid4().hex[:16]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(new + "\n")
    except OSError:
        pass  # read-only home: this process's runs are then never reused, which is safe
    return new


def git_state() -> dict:
    if shutil.which("git") is None or not (PROJECT_ROOT / ".git").exists():
        return {"commit": None, "dirty": None}
    commit = _run(["git", "rev-parse", "HEAD"], PROJECT_ROOT)
    status = _run(["git", "status", "--porcelain", "--untracked-files=no"], PROJECT_ROOT)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def process_backend() -> str:
    """The Keras backend this process would import, found as Keras finds it but without importing Keras
    (importing it with the tensorflow backend would load TensorFlow, which a JAX-only machine may lack)."""
    import json

    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    config = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "keras.json"
    try:
        return json.loads(config.read_text()).get("backend", "tensorflow")
    except (OSError, ValueError):
        return "tensorflow"


def _gib(n) -> float | None:
    return round(n / 2**30, 1) if n else None


def accelerators(backend: str) -> list[dict]:
    """GPUs/TPUs visible to the active Keras backend, through that backend's own device API."""
    found = []
    if backend == "tensorflow":
        import tensorflow as tf

        for d in tf.config.list_physical_devices("GPU"):
            details = tf.config.experimental.get_device_details(d)
            found.append({"kind": "GPU", "name": details.get("device_name", d.name),
                          "compute_capability": details.get("compute_capability")})
    elif backend == "jax":
        import jax

        for d in jax.devices():
            if d.platform != "cpu":
                stats = d.memory_stats() or {}
                found.append({"kind": d.platform.upper(), "name": d.device_kind,
                              "memory_gib": _gib(stats.get("bytes_limit"))})
    elif backend == "torch":
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                found.append({"kind": "GPU", "name": props.name, "memory_gib": _gib(props.total_memory)})
    return found


def backend_build(backend: str) -> dict:
    """The CUDA/cuDNN a backend was built against, where it says."""
    if backend == "tensorflow":
        import tensorflow as tf

        info = tf.sysconfig.get_build_info()
        return {k: info.get(k) for k in ("cuda_version", "cudnn_version") if info.get(k)}
    if backend == "torch":
        import torch

        return {"cuda_version": torch.version.cuda} if torch.version.cuda else {}
    return {}


def _nvidia_driver() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    out = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    return out.splitlines()[0] if out else None


def capture() -> dict:
    import keras

    backend = keras.config.backend()
    acc = accelerators(backend)
    return {
        "device": acc[0]["name"] if acc else f"CPU: {cpu_model()}",
        "accelerators": acc,
        "accelerator_count": len(acc),
        "nvidia_driver": _nvidia_driver(),
        "backend_build": backend_build(backend),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "keras_backend": backend,
        "versions": {p: v for p in _PACKAGES if (v := _version(p))},
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "machine_id": machine_id(),
        "git": git_state(),
        "code_version": code_version(),
    }
