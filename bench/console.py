"""A quiet console: the frameworks' start-up noise left out, and the device said once in tlbench's words.

TensorFlow 2.21 logs through absl before absl is initialised, and that early output ignores
TF_CPP_MIN_LOG_LEVEL: on a CPU machine every run starts with an absl preamble, oneDNN's round-off
note, "Could not find cuda drivers" and "failed call to cuInit". Those lines come while the backend
is imported and asked for its devices, so stderr is caught at the file-descriptor level for that
moment only, and replayed without the lines known to be noise. Anything else TensorFlow says then,
and everything it says later (an XLA fallback, a warning of Keras's), still reaches the user.

The CUDA lines are noise only where no GPU was expected. Where one was (an NVIDIA driver, or
CUDA_VISIBLE_DEVICES naming a device), they are the backend's reason for not using it and are kept,
beside tlbench's own warning.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

# Noise whatever the machine: absl's note about itself, oneDNN's standing round-off caveat, the CPU
# instructions TensorFlow was not built for, TensorRT (tlbench never uses it) and CUDA factories
# registered twice when two frameworks share a process.
NOISE = tuple(re.compile(p) for p in (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"This TensorFlow binary is optimized to use available CPU instructions",
    r"rebuild TensorFlow with the appropriate compiler flags",
    r"TF-TRT Warning: Could not find TensorRT",
    r"Unable to register cu(DNN|FFT|BLAS) factory",
    r"computation placer already registered",
))
# Noise only where no GPU was expected.
CUDA_NOISE = tuple(re.compile(p) for p in (
    r"failed call to cuInit",
    r"Could not find cuda drivers on your machine",
))
_HIDDEN = ("", "-1")  # CUDA_VISIBLE_DEVICES values that hide every GPU on purpose


def quiet_frameworks() -> None:
    """Before any framework is imported: TensorFlow's later INFO lines (XLA service started, devices
    created) off, its warnings and errors kept. A level the user set wins."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def gpu_expected() -> bool:
    """Whether this machine looks like it has a GPU for the backend, asked before the backend is loaded."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return visible not in _HIDDEN
    return shutil.which("nvidia-smi") is not None or Path("/proc/driver/nvidia").is_dir()


def _noise(expect_gpu: bool) -> tuple[re.Pattern, ...]:
    return NOISE if expect_gpu else NOISE + CUDA_NOISE


@contextlib.contextmanager
def filtered_stderr(expect_gpu: bool):
    """Catch what is written to file descriptor 2 (C++ logs included) and replay it without the noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            noise = _noise(expect_gpu)
            lines = caught.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not any(p.search(line) for p in noise)))
            sys.stderr.flush()


def capture_environment() -> dict:
    """environment.capture(), which loads the Keras backend and asks it for its devices, without the noise."""
    from .environment import capture

    with filtered_stderr(gpu_expected()):
        return capture()


def device_line(env: dict) -> str:
    """'device: CPU (AMD EPYC 7B13, 2 cores), no GPU visible to tensorflow': what the runs will use."""
    backend = env.get("keras_backend")
    info = env.get("cpu_info") or {}
    cpu = f"{info.get('model') or env.get('cpu')}, {info.get('cores') or env.get('cpu_count')} cores"
    accelerators = env.get("accelerators") or []
    if accelerators:
        names = ", ".join(sorted({a["name"] for a in accelerators}))
        return f"device: {len(accelerators)} × {names} ({accelerators[0]['kind']}, {backend}); CPU {cpu}"
    visible = (env.get("numerics_env") or {}).get("CUDA_VISIBLE_DEVICES")
    hidden = " (CUDA_VISIBLE_DEVICES hides them)" if visible in _HIDDEN else ""
    return f"device: CPU ({cpu}), no GPU visible to {backend}{hidden}"


def device_warnings(env: dict) -> list[str]:
    """A GPU that the machine has, or that was asked for, but the backend does not see."""
    if env.get("accelerators"):
        return []
    backend = env.get("keras_backend")
    visible = (env.get("numerics_env") or {}).get("CUDA_VISIBLE_DEVICES")
    if visible in _HIDDEN:
        return []
    gpus = env.get("nvidia_gpus") or []
    if gpus:
        names = ", ".join(sorted({g["name"] for g in gpus}))
        return [f"nvidia-smi lists {len(gpus)} GPU(s) ({names}) but {backend} sees none: these runs use the CPU "
                f"(a CPU-only {backend} build, or CUDA libraries it cannot load; see its messages above)"]
    if visible is not None:
        return [f"CUDA_VISIBLE_DEVICES={visible} asks for a GPU but {backend} sees none: these runs use the CPU"]
    return []
