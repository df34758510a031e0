"""Cached backbone features for the frozen-cached mode (the documents' "bottleneck features").

A frozen backbone with BatchNorm in inference mode maps each image to the same pooled features in
every epoch, so they can be computed once and the head trained on them alone. The cache file is
keyed by everything that changes those features: backbone, the weights' identity (file SHA-256,
or the source name; with random weights, the seed that drew them), the exact data (its
fingerprint), image and input size, precision, the cut, pooling, the Keras backend that computed them, the
versions of the frameworks and of tlbench's run-path code (identity.code_version: a change to the
trunk's construction or the weights import must not be served stale features). It lives in
$TLBENCH_CACHE/features/ (default: the user's cache folder, ~/.cache/tlbench/features/ on Linux) and is
written atomically, so a killed run or two concurrent runners never leave a half-written file.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from .config import RunConfig
from .datasets import Data
from .environment import package_version, user_cache
from .identity import code_version
from .interrupt import stoppable
from .store import atomic_file
from .weights import identity

FORMAT = 2  # bump when what a cache file holds changes


@dataclass
class Features:
    x_train: np.ndarray
    x_val: np.ndarray
    info: dict  # for the record: cache hit, key, file, seconds


def cache_dir() -> Path:
    if os.environ.get("TLBENCH_CACHE"):
        return Path(os.environ["TLBENCH_CACHE"]) / "features"
    return user_cache() / "features"


def key(config: RunConfig, data: Data, fingerprint: str) -> tuple[str, dict]:
    w = identity(config.weights)
    weights = w.get("sha256") or w["source"]
    if config.weights == "none":  # random weights: the seed decides them
        weights = f"none/seed {config.seed + config.repeat}"
    ident = {"format": FORMAT, "backbone": config.backbone, "weights": weights, "data": fingerprint,
             "image_shape": list(data.x_train.shape[1:]), "input_size": config.input_size,
             "precision": config.precision, "pooling": config.head["pooling"], "cut": config.cut,
             "backend": keras.backend.backend(), "code": code_version(),
             "versions": {p: package_version(p) for p in ("keras", "tensorflow", "jax", "jaxlib", "torch", "numpy")}}
    blob = json.dumps(ident, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:32], ident


def obtain(config: RunConfig, data: Data, fingerprint: str) -> Features:
    """The pooled features of data's training and validation images, from the cache or computed."""
    k, ident = key(config, data, fingerprint)
    path = cache_dir() / f"{k}.npz"
    t = time.perf_counter()
    cached = _read(path, len(data.x_train), len(data.x_val))
    if cached is not None:
        x_train, x_val, meta = cached
        return Features(x_train, x_val, {"cache_hit": True, "key": k, "file": str(path),
                                         "load_seconds": time.perf_counter() - t,
                                         "extract_seconds": meta["extract_seconds"], "shape": list(x_train.shape[1:])})
    x_train, x_val, build_s, extract_s = _extract(config, data)
    meta = {**ident, "extract_seconds": extract_s, "build_seconds": build_s}
    _write(path, x_train, x_val, meta)
    return Features(x_train, x_val, {"cache_hit": False, "key": k, "file": str(path), "build_seconds": build_s,
                                     "extract_seconds": extract_s, "shape": list(x_train.shape[1:])})


def _extract(config: RunConfig, data: Data):
    from . import model as model_lib

    t = time.perf_counter()
    extractor = model_lib.feature_extractor(config, data.x_train.shape[1:])
    extractor.compile(jit_compile=model_lib.jit_compile(config), steps_per_execution=config.steps_per_execution)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    # float32 on disk whatever the policy: bfloat16/float16 -> float32 is exact, and numpy has no bfloat16.
    with stoppable(extractor):
        x_train, x_val = (extractor.predict(x, batch_size=config.batch_size, verbose=0).astype(np.float32)
                          for x in (data.x_train, data.x_val))
    return x_train, x_val, build_s, time.perf_counter() - t


def _read(path: Path, n_train: int, n_val: int):
    """(train, val, meta), or None when absent or unusable (then it is recomputed and replaced)."""
    try:
        with np.load(path) as f:
            x_train, x_val, meta = f["train"], f["val"], json.loads(str(f["meta"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    if len(x_train) != n_train or len(x_val) != n_val:
        return None
    return x_train, x_val, meta


def _write(path: Path, x_train: np.ndarray, x_val: np.ndarray, meta: dict) -> None:
    with atomic_file(path, "wb") as f:  # streamed: a bytes copy of the features would double the peak memory
        np.savez(f, train=x_train, val=x_val, meta=np.array(json.dumps(meta)))
