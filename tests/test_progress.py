"""The console of `tlbench run`: no framework noise, the device said once, progress with an ETA, a summary."""
import dataclasses
import io
import json
import os
import re

import pytest
from rich.console import Console

from bench import console, progress, store, suite
from bench.config import RunConfig
from conftest import DATA, tlbench

TINY = """\
name: tiny
defaults: {epochs: 2, batch_size: 16, input_size: 32, train_size: 32, val_size: 16, weights: none,
           head: {dense: [16]}}
datasets: {patterns: {type: synthetic, image_size: 16, classes: 4, train: 32, test: 16}}
matrix: {backbone: mobilenet_v2_035, dataset: patterns, mode: [frozen, unfrozen]}
"""
# What TensorFlow 2.21 printed on a CPU machine before tlbench filtered it, and its log prefix in general.
NOISE_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1795948185.699278   27665 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors from different computation orders.",
    "I0000 00:00:1795948185.699709   27665 cudart_stub.cc:31] Could not find cuda drivers on your machine, GPU will "
    "not be used.",
    "E0000 00:00:1795948189.407984   27665 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: Failed "
    "call to cuInit: UNKNOWN ERROR (303)",
]
ABSL_PREFIX = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.]+:\d+\]", re.M)
XLA_WARNING = "W0000 00:00:1.0 1 xla_compiler.cc:9] XLA could not compile the cluster, falling back to TF function"


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    """One tiny run trained, one skipped because another runner holds its lock."""
    tmp = tmp_path_factory.mktemp("progress")
    (tmp / "tiny.yaml").write_text(TINY)
    unfrozen = next(r for r in suite.load(tmp / "tiny.yaml", []).runs if r.mode == "unfrozen")
    with store.run_lock(tmp / "results" / "tiny", unfrozen.run_id) as holder:
        assert holder is None
        p = tlbench("run", tmp / "tiny.yaml", "--results", tmp / "results", "--records-only")
    record = json.loads(next((tmp / "results" / "tiny" / "runs").glob("*frozen*.json")).read_text())
    return p, record


def test_run_prints_no_tensorflow_noise(plain_run):
    p, _ = plain_run
    assert p.returncode == 0, p.stderr[-3000:]
    both = p.stdout + p.stderr
    assert all(ABSL_PREFIX.search(line) for line in NOISE_LINES[1:])  # the pattern does find TensorFlow's lines
    assert not ABSL_PREFIX.search(both), both
    for text in ("absl::InitializeLog", "oneDNN", "cuInit", "cuda drivers", "TF-TRT", "cpu_feature_guard"):
        assert text not in both


def test_run_says_the_device_once(plain_run):
    p, record = plain_run
    lines = [line for line in p.stdout.splitlines() if line.startswith("device: ")]
    assert lines == [console.device_line(record["environment"])]
    if not record["environment"]["accelerators"]:
        assert lines[0].endswith("no GPU visible to tensorflow")


def test_plain_output_has_a_line_per_run_with_eta_and_a_summary(plain_run):
    p, record = plain_run
    out = p.stdout.splitlines()
    assert "run 1/2 mobilenet_v2_035 · patterns · frozen (ETA after the first run)" in out
    assert any(re.fullmatch(r"run 2/2 mobilenet_v2_035 · patterns · unfrozen: another runner \(pid \d+\) is "
                            r"running it, skipped", line) for line in out)
    acc = [f"{100 * e['val_accuracy']:.1f}%" for e in record["epochs"]]
    end = next(line for line in out if line.startswith("run 1/2 mobilenet_v2_035 · patterns · frozen: "))
    assert re.fullmatch(rf"run 1/2 mobilenet_v2_035 · patterns · frozen: ok in \d+ s · val acc {acc[0]} @1, "
                        rf"{acc[1]} @2 · steady {record['epochs'][1]['epoch_seconds']:.1f} s/epoch", end)
    assert re.fullmatch(r"finished in \d+ s: 1 ran \(0 failed or diverged\), 1 skipped", out[-1])
    # plain mode keeps Keras's one line per epoch, and the record says so
    assert sum(line.startswith("Epoch ") for line in out) == 2
    assert record["execution"]["verbose"] == 2


def _golden(mode: str, repeat: int = 0) -> dict:
    return json.loads(next((DATA / "golden" / "runs").glob(f"*-{mode}-r{repeat}-*.json")).read_text())


FROZEN = RunConfig.from_dict(_golden("frozen")["config"])  # 3 epochs of 1,000 + 500 images
UNFROZEN = dataclasses.replace(FROZEN, mode="unfrozen")
WORK = 1000 + 500 / 3


def _rows(*seconds: float) -> list[dict]:
    return [{"epoch_seconds": s, "phase": "first" if i == 0 else "steady"} for i, s in enumerate(seconds)]


def test_eta_counts_first_epoch_apart_and_scales_other_trainability():
    eta = progress.Eta()
    assert eta.remaining([FROZEN]) is None
    eta.add(FROZEN, 20.0, _rows(12, 5, 5))  # steady 5 s/epoch; 5 s beyond three such epochs
    assert eta.remaining([FROZEN]) == pytest.approx(5 + 3 * 5)
    assert eta.remaining([dataclasses.replace(FROZEN, train_size=2000, val_size=1000)]) == pytest.approx(5 + 3 * 10)
    assert eta.remaining([UNFROZEN]) == pytest.approx(4 * (5 + 3 * 5))  # no trained run yet: 4x a frozen one
    assert eta.remaining([FROZEN, UNFROZEN]) == pytest.approx(20 + 80)


def test_eta_updates_within_a_run_from_its_epochs():
    eta = progress.Eta()
    eta.add(FROZEN, 20.0, _rows(12, 5, 5))
    eta.start(UNFROZEN)
    assert eta.remaining([]) == pytest.approx(80)
    eta.epoch(30.0, steady=False)  # a first epoch alone says nothing of the steady ones: still 4x frozen
    assert eta.remaining([]) == pytest.approx(2 * 20)
    eta.epoch(12.0, steady=True)  # its own steady epoch now sets the rate of its kind
    assert eta.remaining([]) == pytest.approx(12)
    assert eta.remaining([FROZEN]) == pytest.approx(12 + 20)
    eta.add(UNFROZEN, 60.0, _rows(30, 12, 12))
    assert eta.running is None and eta.remaining([UNFROZEN]) == pytest.approx(24 + 3 * 12)


def test_eta_in_the_first_run_extrapolates_its_first_epoch():
    eta = progress.Eta()
    eta.start(FROZEN)
    assert eta.remaining([UNFROZEN]) is None
    eta.epoch(12.0, steady=False)
    assert eta.remaining([UNFROZEN]) == pytest.approx(2 * 12 + 4 * 3 * 12)


def test_durations_and_eta_text():
    assert [progress.duration(s) for s in (41.4, 89, 600, 5400, 7199)] == ["41 s", "89 s", "10 min", "1 h 30 min",
                                                                           "2 h 00 min"]
    assert progress._fmt_eta(None) == "ETA after the first run"
    assert progress._fmt_eta(150) == "ETA 2 min"


def test_run_line_names_accuracy_steady_time_status_and_xla_fallback():
    record = _golden("frozen")
    assert progress.run_line("run 1/6 frozen", record, 20) == \
        "run 1/6 frozen: ok in 20 s · val acc 60.0% @1, 70.0% @3 · steady 5.0 s/epoch"
    fell_back = {**record, "xla": {"requested": "on", "resolved": False}}
    assert progress.run_line("r", fell_back, 20).endswith("· XLA was asked for (jit_compile: on) but Keras trained "
                                                          "without it")
    failed = {**record, "status": "failed", "error": "ValueError: boom", "epochs": []}
    assert progress.run_line("r", failed, 3) == "r: FAILED: ValueError: boom"


def test_rich_display_shows_the_bar_with_eta_run_lines_and_summary():
    out = io.StringIO()
    track = progress.SuiteProgress([FROZEN, UNFROZEN], progress.Rich(Console(file=out, force_terminal=True,
                                                                             width=140, color_system=None), 2))
    assert track.verbose == 0  # Keras's own bar would tear the live display
    with track:
        track.start(1, FROZEN, "run 1/2 frozen")
        for seconds, steady in ((12, False), (5, True), (5, True)):
            track.epoch(seconds, steady)
        track.end(FROZEN, _golden("frozen"), 20)
        track.skip(2, "run 2/2 unfrozen", "already recorded, skipped", _golden("unfrozen"))
    text = out.getvalue()
    # after epoch 1 the first epoch stands for all: 2 x 12 s left here, 4 x 3 x 12 s for the unfrozen run
    assert re.search(r"ETA 3 min +run 1/2 frozen · epoch 1/3", text)
    assert re.search(r"ETA 2 min +run 1/2 frozen · epoch 2/3", text)  # 5 s, then 4 x (7 s + 3 x 5 s)
    assert re.search(r"1/2 +\d:\d\d:\d\d +ETA 80 s +run 1/2 frozen\b", text)  # finished: 4 x (5 s + 3 x 5 s)
    assert "run 1/2 frozen: ok in 20 s · val acc 60.0% @1, 70.0% @3 · steady 5.0 s/epoch" in text
    assert "run 2/2 unfrozen: already recorded, skipped" in text
    assert re.search(r"2/2 +\d:\d\d:\d\d +ETA 0 s +run 2/2 unfrozen", text)
    assert (track.ran, track.failed, track.skipped) == (1, 0, 1)
    assert re.fullmatch(r"finished in \d+ s: 1 ran \(0 failed or diverged\), 1 skipped", track.summary())


def test_plain_display_on_a_pipe(monkeypatch):
    monkeypatch.setenv("TTY_INTERACTIVE", "0")
    display = progress.for_terminal(3)
    assert isinstance(display, progress.Plain) and display.verbose == 2


def test_noise_is_filtered_from_stderr_and_other_lines_kept(capfd):
    with console.filtered_stderr(expect_gpu=False):
        os.write(2, "\n".join([*NOISE_LINES, XLA_WARNING, "Traceback (most recent call last):", ""]).encode())
    assert capfd.readouterr().err.splitlines() == [XLA_WARNING, "Traceback (most recent call last):"]


def test_cuda_lines_are_kept_where_a_gpu_was_expected(capfd):
    with console.filtered_stderr(expect_gpu=True):
        os.write(2, "\n".join(NOISE_LINES + [""]).encode())
    assert capfd.readouterr().err.splitlines() == NOISE_LINES[2:]


def test_gpu_expected_from_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert not console.gpu_expected()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    assert console.gpu_expected()


def test_quiet_frameworks_keeps_the_users_log_level(monkeypatch):
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    console.quiet_frameworks()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    console.quiet_frameworks()
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


CPU_ENV = {"keras_backend": "tensorflow", "accelerators": [], "nvidia_gpus": [], "numerics_env": {},
           "cpu_info": {"model": "AMD EPYC 7B13", "cores": 2}}


def test_device_line_and_warnings_when_a_gpu_is_missing():
    assert console.device_line(CPU_ENV) == "device: CPU (AMD EPYC 7B13, 2 cores), no GPU visible to tensorflow"
    assert console.device_warnings(CPU_ENV) == []
    with_driver = {**CPU_ENV, "nvidia_gpus": [{"name": "NVIDIA H200"}]}
    assert console.device_warnings(with_driver)[0].startswith(
        "nvidia-smi lists 1 GPU(s) (NVIDIA H200) but tensorflow sees none: these runs use the CPU")
    asked = {**CPU_ENV, "numerics_env": {"CUDA_VISIBLE_DEVICES": "0"}}
    assert console.device_warnings(asked) == [
        "CUDA_VISIBLE_DEVICES=0 asks for a GPU but tensorflow sees none: these runs use the CPU"]
    hidden = {**with_driver, "numerics_env": {"CUDA_VISIBLE_DEVICES": "-1"}}
    assert console.device_warnings(hidden) == []
    assert console.device_line(hidden).endswith("no GPU visible to tensorflow (CUDA_VISIBLE_DEVICES hides them)")
    gpu = {**CPU_ENV, "accelerators": [{"kind": "GPU", "name": "NVIDIA H200"}]}
    assert console.device_line(gpu) == "device: 1 × NVIDIA H200 (GPU, tensorflow); CPU AMD EPYC 7B13, 2 cores"
