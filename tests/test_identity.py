"""The resume key holds what changes a measurement and nothing else, and a re-run says what changed."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from bench import identity
from bench.config import RunConfig
from conftest import ROOT

BENCH = ROOT / "bench"
TINY = """\
name: tiny
defaults: {epochs: 1, batch_size: 16, input_size: 32, train_size: 32, val_size: 16, weights: none,
           head: {dense: [16]}}
datasets: {patterns: {type: synthetic, image_size: 16, classes: 4, train: 32, test: 16}}
matrix: {backbone: mobilenet_v2_035, dataset: patterns, mode: frozen}
"""


def test_every_bench_module_is_on_the_run_path_or_said_not_to_measure():
    files = {p.name for p in BENCH.glob("*.py")}
    classified = set(identity.RUN_PATH) | set(identity.NOT_MEASURING)
    assert not set(identity.RUN_PATH) & set(identity.NOT_MEASURING)
    assert set(identity.RUN_PATH) <= files
    # The consumers of records (tables, plots, report, compare, ...) are neither: a run never imports them.
    assert {"plots.py", "report.py", "compare.py", "tables.py"} <= files - classified


def test_a_run_imports_only_classified_modules(tmp_path):
    """The module list is checked against a real run, so a new import on the run path cannot slip past."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    script = textwrap.dedent(f"""
        import json, sys
        from bench import cli
        code = cli.main(["run", {str(tmp_path / "tiny.yaml")!r}, "--results", {str(tmp_path / "r")!r},
                         "--records-only", "--quiet"])
        print(json.dumps([code, sorted(m for m in sys.modules if m.startswith("bench."))]))
        """)
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    code, modules = json.loads(p.stdout.strip().splitlines()[-1])
    assert code == 0, p.stdout[-2000:] + p.stderr[-2000:]
    imported = {m.split(".")[1] + ".py" for m in modules}
    assert "runner.py" in imported and "clock.py" in imported
    assert imported <= set(identity.RUN_PATH) | set(identity.NOT_MEASURING), \
        imported - set(identity.RUN_PATH) - set(identity.NOT_MEASURING)


def _env(**changes) -> dict:
    env = {"device": "CPU: Test", "accelerator_count": 0, "cpu_count": 2, "machine_id": "m", "keras_backend": "jax",
           "versions": {"keras": "3.15.1", "jax": "0.10.2", "pandas": "2"}, "runtimes": {}, "python": "3.11.7",
           "backend_build": {}, "nvidia_driver": None, "numerics_env": {}, "code_version": "c0de"}
    for k, v in changes.items():
        env[k] = {**env[k], **v} if isinstance(env.get(k), dict) else v
    return env


CONFIG = RunConfig(suite="s", backbone="b", dataset="d", mode="frozen", repeat=0, epochs=1, batch_size=1,
                   optimizer="adam", learning_rate=1e-3, loss="l", input_size=32, head={}, train_size=None,
                   val_size=None, seed=0, precision="float32", jit_compile="auto", steps_per_execution=1, weights="none")


@pytest.mark.parametrize("change, said", [
    ({"numerics_env": {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}},
     "env.XLA_FLAGS: unset -> --xla_cpu_enable_fast_math=false"),
    ({"numerics_env": {"TF_ENABLE_ONEDNN_OPTS": "0"}}, "env.TF_ENABLE_ONEDNN_OPTS: unset -> 0"),
    ({"nvidia_driver": "560.35.03"}, "platform.nvidia_driver: unset -> 560.35.03"),
    ({"backend_build": {"platform_version": "cuda 12080"}}, "platform.build: {} -> {'platform_version': 'cuda 12080'}"),
    ({"runtimes": {"jax-cuda12-plugin": "0.10.2"}}, "versions.jax-cuda12-plugin: unset -> 0.10.2"),
    ({"versions": {"jaxlib": "0.10.3"}}, "versions.jaxlib: unset -> 0.10.3"),
    ({"python": "3.12.1"}, "versions.python: 3.11.7 -> 3.12.1"),
    ({"cpu_count": 64}, "hardware.cores: 2 -> 64"),
    ({"code_version": "beef"}, "code: c0de -> beef"),
])
def test_what_changes_a_measurement_changes_the_key_and_is_named(change, said):
    before = identity.key_parts(CONFIG, _env(), {"source": "none"})
    after = identity.key_parts(CONFIG, _env(**change), {"source": "none"})
    assert identity.run_key(before) != identity.run_key(after)
    assert identity.changes(before, after) == [said]


def test_what_changes_no_measurement_keeps_the_key():
    before = identity.key_parts(CONFIG, _env(), {"source": "none"})
    after = identity.key_parts(CONFIG, _env(versions={"pandas": "3"}, hostname="elsewhere"), {"source": "none"})
    assert identity.run_key(before) == identity.run_key(after)


def _copy_of_bench(tmp_path):
    """The package copied beside a suite, so a test can edit its code and run it as `python -m bench`."""
    shutil.copytree(BENCH, tmp_path / "bench", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "tiny.yaml").write_text(TINY)

    def run(**env):
        full = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        full.update(PYTHONUNBUFFERED="1", **env)
        return subprocess.run([sys.executable, "-m", "bench", "run", "tiny.yaml", "--results", "r", "--quiet",
                               "--records-only"], cwd=tmp_path, env=full, capture_output=True, text=True, timeout=600)

    return run


def test_editing_plots_reruns_nothing_editing_the_run_path_or_xla_flags_does(tmp_path):
    run = _copy_of_bench(tmp_path)
    assert run().returncode == 0

    plots = tmp_path / "bench" / "plots.py"
    plots.write_text(plots.read_text().replace('"Validation accuracy per epoch"', '"Accuracy, per epoch"'))
    p = run()
    assert p.returncode == 0 and "already recorded (ok)" in p.stdout, p.stdout + p.stderr

    clock = tmp_path / "bench" / "clock.py"
    clock.write_text(clock.read_text() + "\n# an edit on the run path\n")
    p = run()
    assert p.returncode == 0 and "measuring again: what the measurement depends on changed: code: " in p.stdout
    assert "previous record moved to" in p.stdout

    p = run(XLA_FLAGS="--xla_cpu_enable_fast_math=false")
    assert p.returncode == 0, p.stdout + p.stderr
    assert ("measuring again: what the measurement depends on changed: "
            "env.XLA_FLAGS: unset -> --xla_cpu_enable_fast_math=false") in p.stdout
    (record,) = [json.loads(f.read_text()) for f in (tmp_path / "r" / "tiny" / "runs").glob("*.json")]
    assert record["key_parts"]["env"] == {"XLA_FLAGS": "--xla_cpu_enable_fast_math=false"}
    assert record["rerun_reason"].endswith("env.XLA_FLAGS: unset -> --xla_cpu_enable_fast_math=false")
    assert len(list((tmp_path / "r" / "tiny" / "superseded").glob("*.json"))) == 2
