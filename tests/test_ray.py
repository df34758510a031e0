"""`tlbench run --executor ray` on a real two-node Ray cluster on this machine, reachable on 127.0.0.1 only.

Ray 2.60 turns --node-ip-address 127.0.0.1 into the machine's outward address and its gRPC servers listen on every
interface, so the cluster, and the commands that use it, run inside a network namespace of their own that holds
nothing but the loopback interface: whatever Ray binds is then reachable from 127.0.0.1 alone."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, tlbench

pytest.importorskip("ray")

RAY = Path(sys.executable).parent / "ray"
TINY = """\
name: tiny-ray
defaults: {epochs: 1, batch_size: 16, input_size: 32, train_size: 32, val_size: 16, weights: none,
           head: {dense: [16]}}
resources: {cpus: 1}
datasets: {patterns: {type: synthetic, image_size: 16, classes: 4, train: 32, test: 16}}
matrix: {backbone: mobilenet_v2_035, dataset: patterns, mode: [frozen, unfrozen, scratch]}
"""
PORT = 6390  # inside the namespace, where no other process listens


@pytest.fixture(scope="module")
def netns():
    """A network namespace with only the loopback interface, held open by a sleeping process; a prefix that runs a
    command inside it. Skipped where namespaces cannot be made (no unshare, or user namespaces off)."""
    unshare, nsenter = shutil.which("unshare"), shutil.which("nsenter")
    if not (unshare and nsenter):
        pytest.skip("no unshare/nsenter (util-linux): cannot keep the Ray cluster on the loopback interface")
    holder = subprocess.Popen([unshare, "--user", "--map-root-user", "--net", "sh", "-c",
                               "ip link set lo up 2>/dev/null || ifconfig lo up; echo up; exec sleep 3600"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        if holder.stdout.readline().strip() != "up":
            pytest.skip(f"cannot make a network namespace here: {holder.stderr.read().strip()[-300:]}")
        yield [nsenter, "--target", str(holder.pid), "--user", "--net", "--preserve-credentials", "--"]
    finally:
        holder.kill()
        holder.wait()


def _in(netns: list[str], *args, timeout=600) -> subprocess.CompletedProcess:
    """The real command, run inside the namespace."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*netns, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _ray(netns: list[str], *args, timeout=60) -> None:
    p = _in(netns, RAY, *args, timeout=timeout)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]


def _listening(netns: list[str]) -> list[str]:
    """ADDRESS:PORT of every listening TCP socket in the namespace."""
    return [line.split()[3] for line in _in(netns, "ss", "-Hltn").stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def cluster(netns, tmp_path_factory):
    """A head and a second node, one CPU each; `ray stop` in the finalizer, pass or fail."""
    tmp = Path(tmp_path_factory.mktemp("ray", numbered=False))
    temp_dir = Path("/tmp") / f"tlbench-ray-{os.getpid()}"  # Ray's socket paths must stay under 107 bytes
    common = ("--node-ip-address", "127.0.0.1", "--num-cpus", 1, "--disable-usage-stats", "--temp-dir", temp_dir)
    try:
        _ray(netns, "start", "--head", "--port", PORT, "--include-dashboard", "false", *common)
        _ray(netns, "start", "--address", f"127.0.0.1:{PORT}", *common)
        yield netns, f"127.0.0.1:{PORT}", tmp
    finally:
        _in(netns, RAY, "stop", "--force", timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _records(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((folder / "runs").glob("*.json"))}


def _kill_first_task(proc: subprocess.Popen, deadline: float) -> int | None:
    """SIGKILL the first worker seen running a run (its process title names the task), mid-run."""
    while time.monotonic() < deadline and proc.poll() is None:
        ps = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
        busy = [int(line.split()[0]) for line in ps.splitlines() if "ray::_measure_remote" in line]
        if busy:
            time.sleep(2)  # inside the run, past its start
            os.kill(busy[0], signal.SIGKILL)
            return busy[0]
        time.sleep(0.2)
    return None


@pytest.fixture(scope="module")
def ray_run(cluster):
    """The tiny suite on the cluster through the real CLI, one worker killed while it measures."""
    netns, address, tmp = cluster
    (tmp / "tiny.yaml").write_text(TINY)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*netns, sys.executable, "-m", "bench", "run", tmp / "tiny.yaml",
                             "--results", tmp / "results",
                             "--executor", "ray", "--address", address, "--records-only"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        killed = _kill_first_task(proc, time.monotonic() + 90)
        out, _ = proc.communicate(timeout=240)
    finally:
        proc.kill()
    return proc.returncode, out, killed, tmp


def test_ray_run_records_each_configuration_once_and_retries_a_killed_worker(ray_run):
    code, out, killed, tmp = ray_run
    assert code == 0, out[-3000:]
    assert killed is not None
    records = _records(tmp / "results" / "tiny-ray")
    assert sorted(r["config"]["mode"] for r in records.values()) == ["frozen", "scratch", "unfrozen"]
    assert all(r["status"] == "ok" and r["executor"]["name"] == "ray" for r in records.values())
    retried = [r for r in records.values() if r["executor"]["attempts"] == 2]
    assert len(retried) == 1 and "WorkerCrashedError" in retried[0]["executor"]["first_failure"]
    assert "the Ray worker died (WorkerCrashedError" in out and "running it once more" in out
    assert len({r["executor"]["node"] for r in records.values()}) == 2  # both nodes measured
    assert not (tmp / "results" / "tiny-ray" / "superseded").exists()


def test_the_cluster_listens_where_only_127_0_0_1_reaches(cluster):
    netns = cluster[0]
    interfaces = _in(netns, "ip", "-br", "addr").stdout
    assert [line.split()[0] for line in interfaces.splitlines()] == ["lo"] and "127.0.0.1/8" in interfaces
    assert any(a.endswith(f":{PORT}") for a in _listening(netns))  # the head's GCS, inside the namespace
    assert not any(a.endswith(f":{PORT}") for a in _in([], "ss", "-Hltn").stdout.split())  # and not outside it


def test_a_local_run_finds_the_same_configs_and_keys(ray_run):
    """The local runner works its keys out from this machine (without TensorFlow) and finds every run recorded."""
    tmp = ray_run[3]
    p = tlbench("run", tmp / "tiny.yaml", "--results", tmp / "results", "--records-only")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "all 3 runs are recorded for this machine and software, nothing to train" in p.stdout


def test_resume_skips_and_force_reruns_on_the_cluster(ray_run, cluster):
    netns, address, tmp = cluster
    folder = tmp / "results" / "tiny-ray"
    before = _records(folder)
    args = (sys.executable, "-m", "bench", "run", tmp / "tiny.yaml", "--results", tmp / "results",
            "--executor", "ray", "--address", address,
            "--records-only")
    p = _in(netns, *args)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert p.stdout.count("already recorded (ok)") == 3 and "0 ran (0 failed or diverged), 3 skipped" in p.stdout
    assert _records(folder) == before
    p = _in(netns, *args, "--force", "--set", "mode=frozen")
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    after = _records(folder)
    (frozen,) = [k for k, r in after.items() if r["config"]["mode"] == "frozen"]
    assert after[frozen]["rerun_reason"] == "--force" and after[frozen]["key"] == before[frozen]["key"]
    assert [p.stem for p in (folder / "superseded").glob("*.json")] != []
    assert set(after) == set(before)


def test_no_ray_or_no_cluster_is_exit_2_with_the_message(tmp_path, monkeypatch):
    (tmp_path / "tiny.yaml").write_text(TINY)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    p = tlbench("run", tmp_path / "tiny.yaml", "--results", tmp_path, "--executor", "ray", "--address",
                f"127.0.0.1:{port}")
    assert p.returncode == 2 and "no Ray cluster answers there" in p.stderr and "Traceback" not in p.stderr
    (tmp_path / "hide" / "ray").mkdir(parents=True)
    (tmp_path / "hide" / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "hide"))
    p = tlbench("run", tmp_path / "tiny.yaml", "--results", tmp_path, "--executor", "ray")
    assert p.returncode == 2 and "--executor ray needs Ray: pip install 'tlbench[ray]'" in p.stderr
    assert "Traceback" not in p.stderr
