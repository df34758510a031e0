"""The resume key holds what changes a measurement and nothing else, and a re-run says what changed."""
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from bench import environment, identity
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


def _run_in_process(tmp_path) -> tuple[int, list[str], str]:
    """`tlbench run` of TINY in a fresh interpreter: (exit code, the modules it imported, its output)."""
    script = textwrap.dedent(f"""
        import json, sys
        from bench import cli
        code = cli.main(["run", {str(tmp_path / "tiny.yaml")!r}, "--results", {str(tmp_path / "r")!r},
                         "--records-only", "--quiet"])
        print(json.dumps([code, sorted(sys.modules)]))
        """)
    p = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)
    *said, last = p.stdout.strip().splitlines()
    code, modules = json.loads(last)
    return code, modules, "\n".join(said)[-2000:] + p.stderr[-2000:]


def test_a_run_imports_only_classified_modules_and_a_recorded_one_no_backend(tmp_path):
    """The module list is checked against a real run, so a new import on the run path cannot slip past. Run
    again, the recorded run's key is worked out without TensorFlow: the same key, or it would be measured again."""
    (tmp_path / "tiny.yaml").write_text(TINY)
    code, modules, output = _run_in_process(tmp_path)
    assert code == 0, output
    imported = {m.split(".")[1] + ".py" for m in modules if m.startswith("bench.")}
    assert "runner.py" in imported and "clock.py" in imported and "tensorflow" in modules
    assert imported <= set(identity.RUN_PATH) | set(identity.NOT_MEASURING), \
        imported - set(identity.RUN_PATH) - set(identity.NOT_MEASURING)

    code, modules, output = _run_in_process(tmp_path)
    assert code == 0 and "frozen: already recorded (ok) in " in output, output
    assert "all 1 runs are recorded for this machine and software, nothing to train" in output
    assert not {"tensorflow", "keras", "jax", "bench.clock"} & set(modules)


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


@pytest.mark.parametrize("backend, others, own", [
    ("tensorflow", {"versions": {"jax": "0.9", "jaxlib": "0.9", "torch": "2.5"},
                    "runtimes": {"jax-cuda12-plugin": "1"}},
     {"versions": {"tensorflow": "2.22"}, "runtimes": {"tensorflow-metal": "1.2"}}),
    ("jax", {"versions": {"tensorflow": "2.22", "torch": "2.5"}, "runtimes": {"tensorflow-metal": "1.2"}},
     {"versions": {"jaxlib": "0.10.3"}, "runtimes": {"jax-cuda12-plugin": "0.10.2"}}),
])
def test_the_key_holds_the_versions_of_the_runs_own_backend_only(backend, others, own):
    """Installing or upgrading another backend's packages re-measures nothing; the run's own still does."""
    parts = identity.key_parts(CONFIG, _env(keras_backend=backend), {"source": "none"})
    assert parts == identity.key_parts(CONFIG, _env(keras_backend=backend, **others), {"source": "none"})
    for k, v in own.items():
        changed = identity.key_parts(CONFIG, _env(keras_backend=backend, **{k: v}), {"source": "none"})
        (name, version), = v.items()
        assert identity.changes(parts, changed) == [f"versions.{name}: unset -> {version}"]
    shared = identity.key_parts(CONFIG, _env(keras_backend=backend, runtimes={"nvidia-cudnn-cu12": "9.1"}),
                                {"source": "none"})
    assert identity.changes(parts, shared) == ["versions.nvidia-cudnn-cu12: unset -> 9.1"]
    assert set(parts["versions"]) == {"keras", "python"} | ({"jax"} if backend == "jax" else set())


def test_a_recorded_backend_answer_stands_only_on_the_same_machine_and_gpus():
    here = {"machine_id": "m", "keras_backend": "tensorflow", "nvidia_gpus": [], "platform": "Linux-x86_64",
            "cpu": "AMD EPYC"}
    recorded = {**here, "cpu": "another CPU", "device": "CPU: another CPU", "accelerators": [],
                "backend_build": {"cuda_version": "12.5.1"}}
    env = environment.as_recorded(here, recorded)
    # the device is this machine's CPU, whatever the record says; the build is the record's
    assert env == {**here, "device": "CPU: AMD EPYC", "accelerators": [], "accelerator_count": 0,
                   "backend_build": {"cuda_version": "12.5.1"}}
    gpu = {"name": "NVIDIA H100", "memory_gib": 80.0, "driver": "560.35.03"}
    assert environment.as_recorded({**here, "nvidia_gpus": [gpu]}, recorded) is None
    assert environment.as_recorded({**here, "machine_id": "other"}, recorded) is None


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
