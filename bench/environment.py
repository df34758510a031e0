"""What machine and software produced a record.

Versions are read from package metadata, so capturing them never imports a backend that the
run does not use. Only the accelerator query touches the active backend: host() is everything else,
and capture() completes it with the backend's answer (with_backend).
"""
from __future__ import annotations

import math
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
# Accelerator runtimes that ship as their own distributions (jax's CUDA plugin and PJRT, NVIDIA's CUDA
# libraries, TPU runtime): a new build of any of them can change speed without a framework version change.
_RUNTIME_PREFIXES = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "nvidia-", "libtpu", "tensorflow-metal")
# Environment variables that change numerics, kernels, threading or memory behaviour: part of a
# measurement's identity (identity.run_key), recorded with every run.
NUMERICS_ENV = ("XLA_FLAGS", "TF_XLA_FLAGS", "TF_ENABLE_ONEDNN_OPTS", "TF_NUM_INTRAOP_THREADS",
                "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "OPENBLAS_CORETYPE", "NVIDIA_TF32_OVERRIDE", "TF_GPU_ALLOCATOR", "TF_FORCE_GPU_ALLOW_GROWTH",
                "TF_DETERMINISTIC_OPS", "TF_CUDNN_DETERMINISTIC", "XLA_PYTHON_CLIENT_PREALLOCATE",
                "XLA_PYTHON_CLIENT_MEM_FRACTION", "XLA_PYTHON_CLIENT_ALLOCATOR", "JAX_DEFAULT_MATMUL_PRECISION",
                "JAX_ENABLE_X64", "JAX_PLATFORMS", "CUDA_VISIBLE_DEVICES", "PYTORCH_CUDA_ALLOC_CONF",
                "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")
# Instruction-set extensions that decide which CPU kernels oneDNN, XLA and Eigen pick.
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
             "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "asimd", "sve", "sve2")


def package_version(pkg: str) -> str | None:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def user_cache() -> Path:
    """tlbench's folder in the user's cache: ~/.cache/tlbench on Linux ($XDG_CACHE_HOME honoured), the platform's
    own elsewhere."""
    import platformdirs

    return platformdirs.user_cache_path("tlbench")


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

    path = user_cache() / "machine-id"
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
    # Dirty means code or suites differ from the commit; results and recorded benchmark runs are data that
    # runs themselves write, so a re-run in a clone whose results changed is still a run of that commit.
    status = _run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results",
                   ":(exclude)benchmarks/records", ":(exclude)benchmarks/results"], PROJECT_ROOT)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _cpuinfo(field: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.split(":", 1)[0].strip() == field:
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def _cgroup_quota_cores() -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 cpu.max, v1 cfs_quota_us), None when unlimited."""
    for path, parse in ((Path("/sys/fs/cgroup/cpu.max"), lambda t: t.split()),
                        (Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us"),
                         lambda t: [t.strip(), Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()])):
        try:
            quota, period = parse(path.read_text())
        except (OSError, ValueError):
            continue
        if quota in ("max", "-1"):
            return None
        return round(int(quota) / int(period), 2)
    return None


def cpu() -> dict:
    """The CPU as the process sees it: the cores it may run on (affinity and cgroup quota), not the host's count."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    quota = _cgroup_quota_cores()
    flags = set((_cpuinfo("flags") or _cpuinfo("Features") or "").split())
    return {"model": cpu_model(), "cores": min(usable, math.ceil(quota)) if quota else usable,
            "affinity_cores": usable, "quota_cores": quota, "host_cores": os.cpu_count(),
            "isa": [f for f in ISA_FLAGS if f in flags]}


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

        if not torch.version.cuda:
            return {}
        return {"cuda_version": torch.version.cuda, "cudnn_version": torch.backends.cudnn.version()}
    if backend == "jax":
        import jax

        # The PJRT plugin's own account of its CUDA/ROCm build ("cuda 12080" and the like); "cpu" otherwise.
        version = getattr(jax.devices()[0].client, "platform_version", None)
        return {"platform_version": version} if version and jax.default_backend() != "cpu" else {}
    return {}


def _nvidia_smi() -> list[dict]:
    """Every NVIDIA GPU of the machine with its memory and driver, whatever the Keras backend sees."""
    if shutil.which("nvidia-smi") is None:
        return []
    out = _run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"])
    gpus = []
    for line in (out or "").splitlines():
        name, memory, driver = (p.strip() for p in line.split(","))
        gpus.append({"name": name, "memory_gib": round(float(memory) / 1024, 1) if memory.isdigit() else None,
                     "driver": driver})
    return gpus


def runtimes() -> dict:
    """Versions of the accelerator runtime distributions installed beside the frameworks."""
    found = {}
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name.startswith(_RUNTIME_PREFIXES):
            found[name] = dist.version
    return dict(sorted(found.items()))


def numerics_env() -> dict:
    return {k: os.environ[k] for k in NUMERICS_ENV if k in os.environ}


def hardware_label(env: dict) -> str:
    """'CPU: AMD EPYC 7B13 · 2 cores' or 'NVIDIA H100 80GB HBM3 ×8 · 26 cores': what timings depend on."""
    n = env.get("accelerator_count") or 0
    cores = (env.get("cpu_info") or {}).get("cores") or env.get("cpu_count")
    return f"{env.get('device')}" + (f" ×{n}" if n > 1 else "") + (f" · {cores} cores" if cores else "")


def capture() -> dict:
    import keras

    backend = keras.config.backend()
    return with_backend(host(backend), accelerators(backend), backend_build(backend))


def host(backend: str) -> dict:
    """A run's environment as far as it is known without importing the backend (see with_backend)."""
    gpus = _nvidia_smi()
    info = cpu()
    return {
        "nvidia_gpus": gpus,
        "nvidia_driver": gpus[0]["driver"] if gpus else None,
        "cpu": info["model"],
        "cpu_count": info["cores"],
        "cpu_info": info,
        "memory_gib": _memory_gib(),
        "keras_backend": backend,
        "versions": {p: v for p in _PACKAGES if (v := package_version(p))},
        "runtimes": runtimes(),
        "numerics_env": numerics_env(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": platform.node(),
        "machine_id": machine_id(),
        "git": git_state(),
        "code_version": code_version(),
    }


def with_backend(env: dict, found: list[dict], build: dict) -> dict:
    """The host's environment completed with what only the backend can say: the accelerators it sees, its build."""
    return {**env, "device": found[0]["name"] if found else f"CPU: {env['cpu']}", "accelerators": found,
            "accelerator_count": len(found), "backend_build": build}


# An earlier record's backend answer stands for this process's when it was made on this machine, by this backend,
# beside the same NVIDIA GPUs, on the same OS and kernel (versions, runtimes and numerics variables are key parts).
_BACKEND_ANSWER_DEPENDS_ON = ("machine_id", "keras_backend", "nvidia_gpus", "platform")


def as_recorded(env: dict, recorded: dict) -> dict | None:
    """The environment a run would record now, the backend's answer taken from an earlier record of this machine
    instead of asked (importing TensorFlow takes tens of seconds); None when that answer may have changed."""
    if any(recorded.get(k) != env[k] for k in _BACKEND_ANSWER_DEPENDS_ON):
        return None
    return with_backend(env, recorded.get("accelerators") or [], recorded.get("backend_build") or {})
