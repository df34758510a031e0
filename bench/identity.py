"""When are two runs the same run? When nothing that could change their numbers differs.

A record is reused (a suite re-run skips it) only if its key matches: the resolved config,
the exact weights (file hash), the package versions, tlbench's own code, the backend and the
machine (its device and a per-machine id kept in ~/.cache/tlbench). Anything else is a
different measurement and is run again, so a stale result is never served. The record's file
name stays the readable, config-only run id.
"""
from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from .config import RunConfig

_PACKAGE_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of tlbench's own source: changes with the code, not with commits of results or docs."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE_DIR.rglob("*")):
        if path.suffix in {".py", ".yaml"} and "__pycache__" not in path.parts:
            h.update(path.relative_to(_PACKAGE_DIR).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def run_key(config: RunConfig, environment: dict, weights: dict) -> str:
    ident = {
        "config": config.digest,
        "weights": weights.get("sha256") or weights.get("source"),
        "versions": {k: v for k, v in environment.get("versions", {}).items() if k != "pandas"},
        "code": environment.get("code_version"),
        "backend": environment.get("keras_backend"),
        "machine": [environment.get("device"), environment.get("machine_id")],
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
