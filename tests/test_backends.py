"""The Keras backend as a suite axis: other backends run in child processes, and JAX runs never need TensorFlow."""
import json
import os
import subprocess
import sys

import pytest

from bench import suite
from bench.errors import SuiteErrors
from conftest import ROOT

pytest.importorskip("jax", reason="the jax extra is not installed: pip install 'tlbench[jax]'")

SUITE = """\
name: b
defaults: {epochs: 2, batch_size: 16, input_size: 32, train_size: 48, val_size: 16, weights: none, head: {dense: [16]}}
datasets: {patterns: {type: synthetic, image_size: 16, classes: 4, train: 48, test: 16}}
matrix: {backend: BACKENDS, backbone: mobilenet_v2_035, dataset: patterns, mode: [frozen, scratch]}
"""

# Put on PYTHONPATH, Python imports this at start-up: from then on `import tensorflow` fails, as on a
# machine without it, in this process and in every child it starts.
NO_TENSORFLOW = """\
import importlib.abc, sys

class NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named '{name}' (blocked by the test)", name=name)
        return None

sys.meta_path.insert(0, NoTensorFlow())
"""


def _run(tmp_path, backends, env_extra=None, block_tf=False):
    path = tmp_path / "b.yaml"
    path.write_text(SUITE.replace("BACKENDS", backends))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env_extra or {})}
    if block_tf:
        (tmp_path / "block").mkdir()
        (tmp_path / "block" / "sitecustomize.py").write_text(NO_TENSORFLOW)
        env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "block"), str(ROOT)])
    p = subprocess.run([sys.executable, "-m", "bench", "run", str(path), "--results", str(tmp_path / "r"),
                        "--quiet"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    records = [json.loads(f.read_text()) for f in sorted((tmp_path / "r" / "b" / "runs").glob("*.json"))]
    return p, records


def test_backend_axis_defaults_to_tensorflow_and_is_part_of_the_run_identity(write_suite):
    runs = suite.load(write_suite(SUITE.replace("BACKENDS", "[tensorflow, jax]"))).runs
    assert [(r.backend, r.mode) for r in runs] == [("tensorflow", "frozen"), ("tensorflow", "scratch"),
                                                   ("jax", "frozen"), ("jax", "scratch")]
    assert runs[0].digest != runs[2].digest and runs[2].run_id.startswith("jax-mobilenet_v2_035-")
    plain = suite.load(write_suite(SUITE.replace("backend: BACKENDS, ", ""), "p.yaml")).runs
    assert {r.backend for r in plain} == {"tensorflow"}


def test_unknown_backend_lists_the_valid_ones(write_suite):
    with pytest.raises(SuiteErrors, match="unknown backend 'jaxx' \\(did you mean 'jax'\\?\\); valid: jax, tensorflow, torch"):
        suite.load(write_suite(SUITE.replace("BACKENDS", "jaxx")))


def test_jax_runs_end_to_end_where_tensorflow_cannot_be_imported(tmp_path):
    p, records = _run(tmp_path, "jax", {"KERAS_BACKEND": "jax"}, block_tf=True)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert len(records) == 2
    for r in records:
        assert r["status"] == "ok" and r["config"]["backend"] == "jax"
        assert r["environment"]["keras_backend"] == "jax" and "jax" in r["environment"]["versions"]
        assert [e["epoch"] for e in r["epochs"]] == [1, 2] and 0 <= r["epochs"][1]["val_accuracy"] <= 1
    assert "| Frozen weights · random init |" in (tmp_path / "r" / "b" / "table.md").read_text()


def test_one_command_runs_both_backends_each_in_its_own_process(tmp_path):
    p, records = _run(tmp_path, "[tensorflow, jax]")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "backend jax: 2 runs in a child process (KERAS_BACKEND=jax)" in p.stdout
    got = sorted((r["config"]["backend"], r["environment"]["keras_backend"], r["config"]["mode"]) for r in records)
    assert got == [("jax", "jax", "frozen"), ("jax", "jax", "scratch"),
                   ("tensorflow", "tensorflow", "frozen"), ("tensorflow", "tensorflow", "scratch")]
    table = (tmp_path / "r" / "b" / "table.md").read_text()
    assert "· tensorflow · float32**" in table and "· jax · float32**" in table  # one block per backend
