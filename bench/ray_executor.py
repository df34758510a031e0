"""`tlbench run SUITE --executor ray`: each pending run is a Ray task; this process alone writes the records.

The driver reads each run's existing record under the run's lock and sends it with the task. The worker decides
and measures with runner.decide and runner.measure, the code a local run uses, in its own environment: the key
holds the machine that measured. The record comes back to the driver, which writes it as a local run would
(runner.keep), so workers need no shared file system.

Each task carries its run's KERAS_BACKEND and the driver's numerics variables (environment.NUMERICS_ENV) in its
runtime_env, and the driver's bench package (py_modules): a run measures the same code and settings on any node.
CUDA_VISIBLE_DEVICES is Ray's to assign per task; the OMP_NUM_THREADS Ray sets by itself is removed unless the
driver sets it, so a Ray run's key equals a local run's on the same machine.

A worker that dies (killed, out of memory, its node lost) is retried once, by the driver (max_retries=0), and
the record says so (executor.attempts, first_failure); a second death is recorded as failed. Ctrl-C or SIGTERM
cancels what is outstanding (nothing is written for it) and keeps what finished. Ray is imported here only.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from . import console, interrupt, progress, runner, store
from .config import RunConfig
from .environment import NUMERICS_ENV, git_state, numerics_env
from .errors import UserError
from .interrupt import Interrupted
from .suite import Suite

_ASSIGNED_BY_RAY = "CUDA_VISIBLE_DEVICES"
ORDER = "Ray: submitted round-robin, recorded as the cluster finished them"


@dataclass
class _Task:
    position: int
    config: RunConfig
    prefix: str
    existing: dict | None
    attempts: int = 1
    first_failure: str | None = None


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--executor ray needs Ray: pip install 'tlbench[ray]'") from None
    return ray


def _check_address(address: str | None) -> None:
    """Refuse an address no Ray head answers at, in seconds (ray.init would retry for a minute)."""
    if address in (None, "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--address {address}: expected HOST:PORT of a Ray head (its GCS port, 6379 unless "
                        "`ray start --head --port` said otherwise), ray://HOST:PORT or auto")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as e:
        raise UserError(f"--address {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
                        "`ray start --head` or give its address") from None


def _connect(ray, address: str | None) -> None:
    """ray.init, keeping tlbench's SIGINT/SIGTERM handling (ray.init puts its own SIGTERM handler in)."""
    _check_address(address)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    # only a cluster Ray starts for this command may be told how: an existing one is as it was started
    own = {} if address or os.environ.get("RAY_ADDRESS") else {"include_dashboard": False}
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False, **own,
                 runtime_env={"py_modules": [str(Path(__file__).resolve().parent)], "excludes": ["__pycache__"]})
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise UserError(f"--address {address}: could not join the Ray cluster: {e}") from None
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


def _measure_remote(config_dict: dict, existing: dict | None, force: bool, rerun_failed: bool,
                    numerics: dict) -> dict:
    """The Ray task: decide and measure one run in this worker's environment; {skip} or {record, seconds}."""
    import ray

    for name in NUMERICS_ENV:
        if name != _ASSIGNED_BY_RAY and name not in numerics:
            os.environ.pop(name, None)
    config = RunConfig.from_dict(config_dict)
    environment = console.capture_environment()
    decision = runner.decide(config, environment, existing, force, rerun_failed)
    if decision.skip:
        return {"skip": decision.skip}
    t = time.perf_counter()
    record = runner.measure(config, environment, decision, verbose=0)
    record["executor"] = {"name": "ray", "node": ray.get_runtime_context().get_node_id()}
    return {"record": record, "seconds": time.perf_counter() - t, "again": decision.again}


def _runtime_env(backend: str) -> dict:
    numerics = {k: v for k, v in numerics_env().items() if k != _ASSIGNED_BY_RAY}
    return {"env_vars": {"KERAS_BACKEND": backend, **numerics}}


def _unmeasured(task: _Task, error: str) -> dict:
    """The record of a run whose worker never returned one: failed, with no key (no environment came back)."""
    return {"schema": store.SCHEMA, "run_id": task.config.run_id, "suite": task.config.suite,
            "config": task.config.to_dict(), "status": "failed", "error": error, "finished": runner.now(),
            "environment": {"device": "unknown: the Ray worker returned no environment",
                            "keras_backend": task.config.backend}, "epochs": [], "key": None, "key_parts": None}


class _Cluster:
    """The driver's loop: submit, collect, retry a dead worker once, write, show progress."""

    def __init__(self, ray, suite: Suite, folder: Path, options: tuple, track: progress.SuiteProgress):
        self.ray, self.suite, self.folder, self.track = ray, suite, folder, track
        self.force, self.rerun_failed = options
        resources = suite.resources
        self.remote = ray.remote(_measure_remote)
        self.resources = {"num_cpus": resources.get("cpus", 1), "num_gpus": resources.get("gpus", 0)}
        self.crashes = (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError,
                        ray.exceptions.LocalRayletDiedError, ray.exceptions.ObjectLostError)
        self.slots = max(1, int(ray.cluster_resources().get("CPU", 1) // max(resources.get("cpus", 1), 1e-3)))
        self.pending: dict = {}
        self.finished: list[dict] = []
        self.git = git_state()

    def submit(self, task: _Task) -> None:
        ref = self.remote.options(max_retries=0, runtime_env=_runtime_env(task.config.backend),
                                  **self.resources).remote(
            task.config.to_dict(), task.existing, self.force, self.rerun_failed, numerics_env())
        self.pending[ref] = task

    def collect(self) -> None:
        """Wait a moment for finished tasks (short, so that a signal is seen) and take each in."""
        ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=1.0)
        for ref in ready:
            task = self.pending.pop(ref)
            try:
                out = self.ray.get(ref)
            except self.crashes as e:
                self._died(task, e)
            except self.ray.exceptions.RayError as e:
                self._keep(task, _unmeasured(task, f"the Ray task failed: {str(e)[-500:]}"), 0.0)
            else:
                self._returned(task, out)
            self.show()

    def cancel(self) -> None:
        for ref in self.pending:
            self.ray.cancel(ref, force=True)

    def _died(self, task: _Task, error: Exception) -> None:
        why = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}"
        if task.attempts == 1:
            self.track.say(f"{task.prefix}: the Ray worker died ({why}); running it once more")
            task.attempts, task.first_failure = 2, why
            self.submit(task)
        else:
            self._keep(task, _unmeasured(task, f"the Ray worker died twice; the second time: {why}"), 0.0)

    def _returned(self, task: _Task, out: dict) -> None:
        if "skip" in out:
            self.track.skip(task.position, task.prefix,
                            runner.skipped(self.folder, task.config, out["skip"], task.existing), task.existing)
            return
        if out["again"]:
            self.track.say(f"{task.prefix}: measured again: {out['again']}")
        record = out["record"]
        record["environment"]["git"] = self.git  # the code is this process's tree, sent as py_modules
        self._keep(task, record, out["seconds"])

    def _keep(self, task: _Task, record: dict, seconds: float) -> None:
        record["executor"] = {**record.get("executor", {"name": "ray"}), "attempts": task.attempts,
                              **({"first_failure": task.first_failure} if task.first_failure else {})}
        record["schedule"] = runner.schedule(self.suite, task.position, len(self.finished) + 1, ORDER)
        runner.keep(self.folder, record, task.existing, self.track.say, task.prefix)
        self.finished.append(record)
        self.track.recorded(task.config, record, seconds, task.prefix)

    def show(self) -> None:
        """'N running on the cluster' and an ETA that divides the work left by the runs that go at once."""
        if not self.pending:
            return
        left = self.track.eta.remaining([t.config for t in self.pending.values()])
        eta = None if left is None else left / min(len(self.pending), self.slots)
        done = len(self.suite.runs) - len(self.pending)
        label = f"{done}/{len(self.suite.runs)} done, {len(self.pending)} running on the cluster (or queued)"
        self.track.display.update(done, label, eta)  # the bar on a terminal
        self.track.display.started(label, eta)  # a line in a log


def run_suite(suite: Suite, folder: Path, address: str | None, force: bool = False,
              rerun_failed: bool = False) -> list[dict]:
    """Run every run not already recorded on the Ray cluster at `address` (None: RAY_ADDRESS, or a local one)."""
    ray = _import_ray()
    folder = Path(folder)
    _connect(ray, address)
    track = progress.SuiteProgress(suite.runs, progress.for_terminal(len(suite.runs)))
    try:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        total = ray.cluster_resources()
        track.say(f"tlbench: suite '{suite.name}', {len(suite.runs)} runs on the Ray cluster "
                  f"({len(nodes)} nodes, {total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs) -> {folder}")
        cluster = _Cluster(ray, suite, folder, (force, rerun_failed), track)
        _drive(cluster, suite, folder, track)
    finally:
        ray.shutdown()
    track.say(track.summary())
    return cluster.finished


def _drive(cluster: _Cluster, suite: Suite, folder: Path, track: progress.SuiteProgress) -> None:
    """Submit every run this process can lock, collect until none is outstanding; a signal cancels the rest."""
    try:
        with contextlib.ExitStack() as locks, track:
            for i, config in enumerate(suite.runs, 1):
                interrupt.check()
                prefix = f"run {i}/{len(suite.runs)} {suite.describe(config)}"
                holder = locks.enter_context(store.run_lock(folder, config.run_id))
                if holder is not None:
                    track.skip(i, prefix, f"another runner (pid {holder}) is running it, skipped")
                    continue
                existing = runner.recorded(folder, config, track.say, prefix)
                cluster.submit(_Task(i, config, prefix, existing))
            cluster.show()
            while cluster.pending:
                interrupt.check()
                cluster.collect()
    except (KeyboardInterrupt, Interrupted) as e:
        cluster.cancel()
        track.say(f"interrupted: {len(cluster.finished)} run(s) recorded this time in {folder}; "
                  f"{len(cluster.pending)} cancelled on the cluster, not recorded")
        raise Interrupted(e.code if isinstance(e, Interrupted) else 130) from None
