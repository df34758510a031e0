"""Crashes, interrupts, failures and concurrent runners never cost or duplicate a finished run."""
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import suite
from bench.errors import SuiteErrors
from conftest import ROOT, tlbench

TINY = {
    "name": "tiny",
    "defaults": {"epochs": 2, "batch_size": 16, "input_size": 32, "train_size": 32, "val_size": 16,
                 "weights": "none", "head": {"dense": [16]}},
    "datasets": {"patterns": {"type": "synthetic", "image_size": 16, "classes": 4, "train": 32, "test": 16}},
    "matrix": {"backbone": "mobilenet_v2_035", "dataset": "patterns", "mode": ["frozen", "unfrozen", "scratch"]},
}


def _suite(tmp_path, **changes) -> tuple:
    data = json.loads(json.dumps(TINY))
    for k, v in changes.items():
        data[k] = {**data[k], **v} if isinstance(v, dict) else v
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(data))
    return path, tmp_path / "results", tmp_path / "results" / data["name"]


def _start(path, results, *extra):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "bench", "run", str(path), "--results", str(results), "--quiet",
                             *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _records(folder):
    return [json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*.json"))]


def _csv_rows(folder) -> tuple[int, int]:
    """(rows of runs.csv, rows of epochs.csv): the derived tables, which must agree with the records."""
    return tuple(len((folder / name).read_text().splitlines()) - 1 for name in ("runs.csv", "epochs.csv"))


def _clean(out: str) -> None:
    assert "Traceback" not in out and "Exception ignored" not in out and "ImportError" not in out, out[-3000:]


def _wait_for_records(folder, n, proc, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if len(list((folder / "runs").glob("*.json"))) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"no {n} records in time; runner said: {proc.communicate()[0][-2000:]}")


def test_sigkill_mid_suite_then_resume_runs_each_run_exactly_once(tmp_path):
    path, results, folder = _suite(tmp_path)
    proc = _start(path, results)
    _wait_for_records(folder, 1, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    survivors = {r["run_id"]: os.path.getmtime(folder / "runs" / f"{r['run_id']}.json") for r in _records(folder)}
    assert 1 <= len(survivors) < 3
    assert not list((folder / "runs").glob("*.tmp"))  # no half-written record
    assert _csv_rows(folder) == (len(survivors), 2 * len(survivors))  # rebuilt after each record, not at the end

    p = tlbench("run", path, "--results", results, "--quiet")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    recs = _records(folder)
    assert sorted(r["config"]["mode"] for r in recs) == ["frozen", "scratch", "unfrozen"]
    assert all(r["status"] == "ok" for r in recs)
    assert p.stdout.count("already recorded (ok)") == len(survivors)
    for run_id, mtime in survivors.items():  # finished runs were not redone
        assert os.path.getmtime(folder / "runs" / f"{run_id}.json") == mtime
    assert not (folder / "superseded").exists()


def test_sigterm_stops_records_what_finished_and_the_printed_command_resumes_it(tmp_path):
    path, results, folder = _suite(tmp_path)
    proc = _start(path, results, "--set", "epochs=1")
    _wait_for_records(folder, 1, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-2000:]
    assert "interrupted:" in out
    _clean(out)  # it stops at a safe point: no exception lands inside Keras or an import
    recs = _records(folder)
    assert 1 <= len(recs) < 3 and all(r["status"] == "ok" for r in recs)
    assert _csv_rows(folder) == (len(recs), len(recs))

    # The hint, run as printed, resumes the same --set suite: the finished runs are skipped, not redone.
    hint = re.search(r"resume with: tlbench (.+?)  \(recorded runs are skipped\)", out).group(1)
    p = tlbench(*shlex.split(hint))
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert p.stdout.count("already recorded (ok)") == len(recs)
    assert sorted(r["config"]["mode"] for r in _records(folder)) == ["frozen", "scratch", "unfrozen"]
    assert {r["config"]["epochs"] for r in _records(folder)} == {1}


@pytest.mark.parametrize("signum, delay", [(signal.SIGINT, 0.5), (signal.SIGTERM, 3.0)])
def test_a_signal_before_any_run_exits_by_it_with_the_exact_resume_command(tmp_path, signum, delay):
    path, results, folder = _suite(tmp_path)
    proc = _start(path, results, "--set", "epochs=1")
    time.sleep(delay)  # 0.5 s: reading the suite; 3 s: importing TensorFlow
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signum, out[-3000:]
    assert f"resume with: tlbench run {path} --results {results} --quiet --set epochs=1" in out
    _clean(out)
    assert not _records(folder) if (folder / "runs").is_dir() else True


def test_a_second_ctrl_c_while_stopping_is_acknowledged_and_nothing_is_half_written(tmp_path):
    path, results, folder = _suite(tmp_path)
    proc = _start(path, results)
    _wait_for_records(folder, 1, proc)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out[-2000:]
    assert "already stopping" in out
    _clean(out)
    recs = _records(folder)
    assert 1 <= len(recs) < 3 and all(r["status"] == "ok" for r in recs)
    assert _csv_rows(folder) == (len(recs), 2 * len(recs))


def test_sigterm_while_the_table_and_figures_are_written_leaves_them_whole(tmp_path):
    path, results, folder = _suite(tmp_path, defaults={"epochs": 1}, matrix={"mode": ["frozen"]})
    assert tlbench("run", path, "--results", results, "--quiet").returncode == 0
    table = (folder / "table.md").read_text()
    proc = _start(path, results)  # everything is recorded: it goes straight to the table and figures
    while "skipped" not in (line := proc.stdout.readline()):
        assert line, "the runner ended before skipping the recorded run"
    proc.send_signal(signal.SIGTERM)
    out = line + proc.communicate(timeout=120)[0]
    assert proc.returncode in (0, 143), out[-2000:]  # 0: the signal came after the last check point
    _clean(out)
    assert (folder / "table.md").read_text() == table
    assert not list(folder.rglob(".*.tmp"))


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB file system (tmpfs) for the results; needs root, as in CI, else the test is skipped."""
    mount = tmp_path / "results"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def test_a_full_disk_stops_the_suite_with_one_message_and_loses_nothing(tmp_path, small_disk):
    path, results, folder = _suite(tmp_path)
    proc = _start(path, small_disk)
    _wait_for_records(folder, 1, proc)
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # take every byte left
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 2, out[-3000:]
    _clean(out)
    assert out.count("No space left on device") == 1 and "MiB free on that file system" in out
    assert f"then resume with: tlbench run {path} --results {small_disk} --quiet" in out
    recs = _records(folder)
    assert recs and all(r["status"] == "ok" for r in recs)
    assert not list(folder.rglob(".*.tmp"))

    filler.unlink()
    p = tlbench("run", path, "--results", small_disk, "--quiet")
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert sorted(r["config"]["mode"] for r in _records(folder)) == ["frozen", "scratch", "unfrozen"]


def test_a_failing_run_is_recorded_and_the_suite_goes_on(tmp_path):
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "b").mkdir()
    for cls in "ab":
        for i in range(3):
            (tmp_path / "imgs" / cls / f"{i}.png").write_bytes(b"not an image")
    path, results, folder = _suite(
        tmp_path, defaults={"train_size": 4, "val_size": 1, "epochs": 1},
        datasets={"broken": {"type": "image_folder", "path": "imgs", "image_size": 16}},
        matrix={"dataset": ["broken", "patterns"], "mode": ["frozen"]})
    p = tlbench("run", path, "--results", results, "--quiet")
    assert p.returncode == 1
    recs = {r["config"]["dataset"]: r for r in _records(folder)}
    assert recs["patterns"]["status"] == "ok"
    assert recs["broken"]["status"] == "failed" and "cannot read image" in recs["broken"]["error"]
    assert "failed: mobilenet_v2_035-broken-frozen" in p.stderr
    assert "| Frozen weights · random init | failed | failed |" in (folder / "table.md").read_text()


def test_nan_loss_marks_the_run_diverged(tmp_path):
    path, results, folder = _suite(tmp_path, defaults={"optimizer": "sgd", "learning_rate": 1e38, "epochs": 4},
                                   matrix={"mode": ["scratch"]})
    p = tlbench("run", path, "--results", results, "--quiet")
    assert p.returncode == 1
    (rec,) = _records(folder)
    assert rec["status"] == "diverged" and "NaN" in rec["error"]
    assert len(rec["epochs"]) < 4  # stopped early


def test_two_concurrent_runners_neither_duplicate_nor_corrupt(tmp_path):
    path, results, folder = _suite(tmp_path)
    a, b = _start(path, results), _start(path, results)
    out = a.communicate(timeout=600)[0] + b.communicate(timeout=600)[0]
    assert a.returncode == 0 and b.returncode == 0, out[-3000:]
    recs = _records(folder)
    assert sorted(r["config"]["mode"] for r in recs) == ["frozen", "scratch", "unfrozen"]
    assert not (folder / "superseded").exists()
    assert out.count("another runner") + out.count("already recorded") >= 3  # the other side of each run said why
    assert _csv_rows(folder) == (3, 6)  # whichever finished last rebuilt them from every record


def test_rerun_failed_retries_only_failed_runs(tmp_path):
    path, results, folder = _suite(tmp_path, defaults={"epochs": 1}, matrix={"mode": ["frozen", "scratch"]})
    assert tlbench("run", path, "--results", results, "--quiet").returncode == 0
    scratch = next((folder / "runs").glob("*scratch*.json"))
    rec = json.loads(scratch.read_text())
    rec.update(status="failed", error="RuntimeError: injected")
    scratch.write_text(json.dumps(rec))
    p = tlbench("run", path, "--results", results, "--quiet")
    assert p.returncode == 1 and "already recorded (failed)" in p.stdout
    p = tlbench("run", path, "--results", results, "--quiet", "--rerun-failed")
    assert p.returncode == 0 and p.stdout.count("already recorded (ok)") == 1
    assert json.loads(scratch.read_text())["status"] == "ok"
    assert len(list((folder / "superseded").glob("*scratch*.json"))) == 1  # the failed record is kept aside


# --- any suite either validates or fails with located errors, never a traceback -----------

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 100_000), st.floats(allow_nan=True),
                    st.text(max_size=12), st.sampled_from(["frozen", "mobilenet_v2", "synthetic", "1e-3", "auto"]))
keys = st.sampled_from(list(suite.SETTINGS) + list(suite.TOP_KEYS) + list(suite.AXES) + ["match", "set", "type",
                                                                                         "bogus"])
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                        st.dictionaries(keys, inner, max_size=5)), max_leaves=20)


def _validates_or_locates_errors(path, text: str) -> None:
    path.write_text(text)
    try:
        suite.load(path)
    except SuiteErrors as e:
        assert e.errors and all(str(err).startswith(str(path)) for err in e.errors)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.dictionaries(keys, values, max_size=7))
def test_any_suite_validates_or_gives_located_errors(tmp_path, doc):
    _validates_or_locates_errors(tmp_path / "h.yaml", yaml.safe_dump(doc))


names = st.one_of(values, st.sampled_from(["mobilenet_v2", "synthetic", "frozen", "scratch", "d", "image_folder"]))
structured = st.fixed_dictionaries({
    "name": st.one_of(st.just("s"), scalars),
    "defaults": st.dictionaries(st.sampled_from(list(suite.SETTINGS)), values, max_size=4),
    "matrix": st.dictionaries(st.sampled_from(suite.AXES), st.one_of(names, st.lists(names, max_size=3)), max_size=3),
    "datasets": st.dictionaries(st.sampled_from(["d", "synthetic"]), st.dictionaries(
        st.sampled_from(["type", "path", "image_size", "classes", "train", "val_fraction", "noise", "x"]),
        st.one_of(names, values), max_size=4), max_size=2),
    "overrides": st.one_of(values, st.lists(st.fixed_dictionaries({
        "match": st.dictionaries(st.sampled_from(suite.AXES), st.one_of(names, st.lists(names, max_size=2)), max_size=2),
        "set": st.dictionaries(st.sampled_from(list(suite.SETTINGS)), values, max_size=3)}), max_size=2)),
})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=structured)
def test_any_nearly_right_suite_validates_or_gives_located_errors(tmp_path, doc):
    _validates_or_locates_errors(tmp_path / "n.yaml", yaml.safe_dump(doc))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200))
def test_any_text_is_a_suite_or_a_located_error(tmp_path, text):
    _validates_or_locates_errors(tmp_path / "t.yaml", text)


def test_a_record_named_by_an_older_id_scheme_is_superseded_not_doubled(tmp_path):
    path, results, folder = _suite(tmp_path, defaults={"epochs": 1}, matrix={"mode": ["frozen"]})
    assert tlbench("run", path, "--results", results, "--quiet").returncode == 0
    (new,) = (folder / "runs").glob("*.json")
    old = json.loads(new.read_text())
    del old["config"]["backend"]  # as tlbench wrote configs before the backend axis
    old.update(run_id="mobilenet_v2_035-patterns-frozen-r0-0000000000", key="older")
    new.unlink()
    (folder / "runs" / f"{old['run_id']}.json").write_text(json.dumps(old))
    p = tlbench("run", path, "--results", results, "--quiet")
    assert p.returncode == 0 and "previous record moved to" in p.stdout
    assert [f.name for f in (folder / "runs").glob("*.json")] == [new.name]
    assert len(list((folder / "superseded").glob("*.json"))) == 1
