"""The one-call GPU check: its summary on crafted records, and scripts/gpu-check.sh rehearsed on the CPU under JAX."""
import copy
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from bench import gpucheck
from conftest import DATA, ROOT, tlbench

GOLDEN_RUN = DATA / "golden" / "runs" / "mobilenet_v2-fashion_mnist-frozen-r0-5e9b4c7536.json"


def _row(text: str, kind: str) -> list[str]:
    """A summary line's cells (two or more spaces apart), found by its first cell."""
    return next(re.split(r"\s{2,}", line) for line in text.splitlines() if line.startswith(kind + "  "))


def _crafted(device: str, precision: str, mode: str = "frozen", train_flops: int = 2_000_000_000) -> dict:
    """A golden record on another device: 1,000 training images in 0.01 s a steady epoch = 100,000 images/s."""
    r = copy.deepcopy(json.loads(GOLDEN_RUN.read_text()))
    r["run_id"] += f"-{device}-{precision}"
    r["config"].update(precision=precision, mode=mode)
    r["environment"]["device"] = device
    r["flops"] = {"forward": train_flops // 3, "train": train_flops, "uncounted": []}
    for e in r["epochs"][1:]:
        e.update(train_seconds=0.01, epoch_seconds=0.02)
    return r


@pytest.mark.parametrize("device, precision, expected", [
    ("NVIDIA H200", "float32", (494.7, "TF32")),
    ("NVIDIA H200 NVL", "mixed_bfloat16", (835.5, "BF16")),
    ("NVIDIA H100 80GB HBM3", "mixed_bfloat16", (989.4, "BF16")),
    ("NVIDIA H100 PCIe", "mixed_float16", (756.0, "FP16")),
    ("NVIDIA A100-SXM4-80GB", "float32", (156.0, "TF32")),
    ("NVIDIA L40S", "mixed_bfloat16", (362.05, "BF16")),
    ("NVIDIA L4", "float32", (60.0, "TF32")),
    ("Tesla T4", "mixed_float16", (65.0, "FP16")),
    ("Tesla T4", "mixed_bfloat16", None),  # no bfloat16 in its hardware
    ("CPU: AMD EPYC", "float32", None),
])
def test_peak_per_device_and_precision(device, precision, expected):
    assert gpucheck.peak(device, precision) == expected


def test_summary_sets_achieved_tflops_against_the_devices_peak():
    records = [_crafted("NVIDIA H100 80GB HBM3", "mixed_bfloat16"), _crafted("NVIDIA H200", "float32", "unfrozen"),
               _crafted("Tesla T4", "mixed_bfloat16", "scratch")]
    text = gpucheck.summary(records)
    # 2 GFLOP per training image x 100,000 images/s = 200 TFLOP/s, against each device's dense peak
    assert _row(text, "frozen") == ["frozen", "mixed_bfloat16", "12", "0.02 [0.02–0.02] n=2", "12", "100000", "200",
                                    "20.21% of 989.4 (BF16 dense)"]
    assert _row(text, "unfrozen")[5:] == ["100000", "200", "40.43% of 494.7 (TF32 dense)"]
    assert _row(text, "scratch")[5:] == ["100000", "200", "peak unknown"]
    assert text.splitlines()[0].startswith("GPU check · NVIDIA H100 80GB HBM3 · 2 cores + NVIDIA H200 · 2 cores + ")


def test_gpu_summary_command_on_records_without_flops_and_on_a_wrong_folder(golden, tmp_path):
    p = tlbench("gpu-summary", golden)
    assert p.returncode == 1  # the golden folder holds a run that did not finish
    assert _row(p.stdout, "frozen")[2:] == ["11.5", "5 [5–6] n=4", "6.5", "250", "—", "no FLOP count in the record"]
    assert (golden / "summary.txt").read_text() == p.stdout.removesuffix(f"wrote {golden / 'summary.txt'}\n")
    p = tlbench("gpu-summary", tmp_path / "nothing")
    assert p.returncode == 2 and "holds no results (no runs/ folder)" in p.stderr and "Traceback" not in p.stderr


def _script(args: list[str], env: dict, timeout: int) -> subprocess.CompletedProcess:
    """scripts/gpu-check.sh as a user runs it; its process group (tlbench, tee) stopped if it overruns."""
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "gpu-check.sh"), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def test_without_a_gpu_the_real_check_refuses_before_anything_is_written(tmp_path):
    pytest.importorskip("jax", reason="the jax extra is not installed: pip install 'tlbench[jax]'")
    env = {**os.environ, "PYTHON": sys.executable, "GPU_CHECK_RESULTS": str(tmp_path / "r"), "JAX_PLATFORMS": "cpu"}
    p = _script([], env, timeout=60)
    assert p.returncode == 2
    assert p.stdout == "gpu-check: JAX sees no GPU ([CpuDevice(id=0)]); rehearse with --dry-run\n"
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory):
    """The dry run, once, as on the GPU machine: KERAS_BACKEND=jax and `import tensorflow` failing."""
    pytest.importorskip("jax", reason="the jax extra is not installed: pip install 'tlbench[jax]'")
    from test_backends import NO_TENSORFLOW

    tmp = tmp_path_factory.mktemp("gpu-check")
    (tmp / "block").mkdir()
    (tmp / "block" / "sitecustomize.py").write_text(NO_TENSORFLOW)
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(tmp / "block"), "GPU_CHECK_RESULTS": str(tmp),
           "TLBENCH_CACHE": str(tmp / "cache")}
    p = _script(["--dry-run", str(tmp / "no-bundle")], env, timeout=300)
    folder = tmp / "gpu-cpu-dry-run" / "gpu-check"
    records = [json.loads(f.read_text()) for f in sorted((folder / "runs").glob("*.json"))]
    return p, folder, records


def test_rehearsal_runs_every_mode_under_jax_and_exits_0(rehearsal):
    p, folder, records = rehearsal
    assert p.returncode == 0, p.stdout[-3000:]
    assert "keras importable: bundle install skipped" in p.stdout
    assert re.search(r"top-1 (1[7-9]|20)/20", p.stdout)  # the weights check ran and passed
    got = sorted((r["config"]["mode"], r["config"]["strategy"] or "", r["precision"]) for r in records)
    assert got == [("frozen", "", "float32"), ("frozen-cached", "", "float32"), ("scratch", "", "float32"),
                   ("unfrozen", "", "float32"), ("unfrozen", "unfrozen-bf16", "mixed_bfloat16")]
    assert {(r["status"], r["config"]["backend"], r["environment"]["keras_backend"], len(r["epochs"]))
            for r in records} == {("ok", "jax", "jax", 2)}
    git_add = p.stdout.splitlines()[-2].split()
    written = [*(folder / "runs").glob("*.json"), *(folder / n for n in ("suite.yaml", "table.md", "summary.txt"))]
    assert git_add[:3] == ["git", "add", "-f"] and sorted(git_add[3:]) == sorted(map(str, written))
    assert (folder.parent / "gpu-check.log").read_text() == p.stdout


def test_rehearsal_summary_is_computed_from_the_records(rehearsal):
    p, folder, records = rehearsal
    summary = (folder / "summary.txt").read_text()
    assert summary in p.stdout
    for r in records:
        cells = _row(summary, r["config"]["strategy"] or r["config"]["mode"])
        first, steady = r["epochs"]
        images_per_s = steady["train_images"] / steady["train_seconds"]
        assert cells[1] == r["precision"]
        assert float(cells[2]) == pytest.approx(first["epoch_seconds"], rel=5e-3)
        assert cells[3] == f"{gpucheck._num(steady['epoch_seconds'])} n=1"
        assert float(cells[5]) == pytest.approx(images_per_s, rel=5e-3, abs=0.5)
        assert float(cells[6]) == pytest.approx(r["flops"]["train"] * images_per_s / 1e12, rel=5e-3)
        assert cells[7] == "peak unknown"
