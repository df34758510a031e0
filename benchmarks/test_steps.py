"""Step timings with pytest-benchmark: one training step and one prediction step per backbone x mode.

The models are the harness's own (bench/model.py, built from a suite like any run), fed synthetic
uint8 batches, so a timing isolates the compiled step from data loading. Weights are random
('weights: none'): a step costs the same with ImageNet weights, and the benchmarks stay offline.

Size by environment (defaults: tiny, under a minute on a 2-core CPU):
  TLBENCH_BENCH_BACKBONES  comma-separated backbone names   mobilenet_v2_035
  TLBENCH_BENCH_SIZE       input pixels (no resize layer)   32
  TLBENCH_BENCH_BATCH      images per step                  8
  TLBENCH_BENCH_ROUNDS     timed steps per benchmark        10
  TLBENCH_BENCH_WARMUP     untimed steps first              2

  python -m pytest benchmarks --benchmark-only [--benchmark-autosave]
"""
from __future__ import annotations

import os

import keras
import numpy as np
import pytest

from bench import model as model_lib
from bench import suite
from bench.modes import MODES

BACKBONES = [b.strip() for b in os.environ.get("TLBENCH_BENCH_BACKBONES", "mobilenet_v2_035").split(",") if b.strip()]
SIZE = int(os.environ.get("TLBENCH_BENCH_SIZE", "32"))
BATCH = int(os.environ.get("TLBENCH_BENCH_BATCH", "8"))
ROUNDS = int(os.environ.get("TLBENCH_BENCH_ROUNDS", "10"))
# The first call traces and compiles the step (XLA under jit_compile "auto"): warm-up, never timed,
# like the first epoch that the runs record apart.
WARMUP = int(os.environ.get("TLBENCH_BENCH_WARMUP", "2"))
CLASSES = 10

SUITE = f"""\
name: step-benchmarks
defaults: {{input_size: {SIZE}, batch_size: {BATCH}, weights: none}}
matrix: {{backbone: [{", ".join(BACKBONES)}], dataset: synthetic, mode: [{", ".join(MODES.names())}]}}
"""
# A cached-features mode's step is the head alone, on features rather than images: benchmarks/overhead.py
# times it against frozen; here it would only repeat frozen's step.
STEP_MODES = [m for m in MODES.names() if not MODES.get(m).cached_features]
CASES = [pytest.param(b, m, id=f"{b}-{m}") for b in BACKBONES for m in STEP_MODES]


@pytest.fixture(scope="session")
def configs(tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("suite") / "steps.yaml"
    path.write_text(SUITE)
    return {(r.backbone, r.mode): r for r in suite.load(path).runs}


@pytest.fixture(scope="session")
def batch():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (BATCH, SIZE, SIZE, 3), dtype=np.uint8)
    y = keras.utils.to_categorical(rng.integers(0, CLASSES, BATCH), CLASSES)
    return x, y


@pytest.fixture
def compiled(configs, request):
    backbone, mode = request.node.callspec.params["backbone"], request.node.callspec.params["mode"]
    config = configs[backbone, mode]
    model = model_lib.build(config, (SIZE, SIZE, 3), CLASSES)
    model_lib.compile(model, config)
    yield model
    keras.backend.clear_session()  # one model's graphs and compiled steps must not slow the next


def _time(benchmark, step, *args):
    # Both steps return NumPy values, so each timed call waits for the device to finish.
    benchmark.extra_info.update(images_per_round=BATCH, input_size=SIZE)
    benchmark.pedantic(step, args=args, rounds=ROUNDS, warmup_rounds=WARMUP, iterations=1)


@pytest.mark.benchmark(group="train step")
@pytest.mark.parametrize("backbone, mode", CASES)
def test_train_step(benchmark, compiled, batch, backbone, mode):
    _time(benchmark, compiled.train_on_batch, *batch)


@pytest.mark.benchmark(group="predict step")
@pytest.mark.parametrize("backbone, mode", CASES)
def test_predict_step(benchmark, compiled, batch, backbone, mode):
    _time(benchmark, compiled.predict_on_batch, batch[0])
