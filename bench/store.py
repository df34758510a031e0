"""Records on disk. One JSON file per run is the truth; the CSV tables are rebuilt from them.

  RESULTS/runs/<run_id>.json   everything about one run (config, environment, per-epoch rows)
  RESULTS/epochs.csv           one row per (run, epoch)       -- rebuilt, never appended
  RESULTS/runs.csv             one row per run
  RESULTS/superseded/          records replaced by a newer measurement of the same run, kept

Each file is written to a temporary name and renamed into place, so a crash leaves either
the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path

import pandas as pd

from .errors import UserError

SCHEMA = 2  # 2: key_parts, load, schedule, cpu_info
RUN_COLUMNS = ["run_id", "suite", "backbone", "dataset", "mode", "repeat", "weights", "input_size",
               "batch_size", "epochs", "optimizer", "learning_rate", "precision", "jit_compile", "backend",
               "device"]
EPOCH_COLUMNS = RUN_COLUMNS + ["status", "epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy",
                               "epoch_seconds", "train_seconds", "val_seconds", "train_images",
                               "images_per_second"]


_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run_path(folder: Path, run_id: str) -> Path:
    return Path(folder) / "runs" / f"{run_id}.json"


def write_run(folder: Path, record: dict) -> Path:
    path = run_path(folder, record["run_id"])
    atomic_write(path, json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    return path


def read_record(path: Path) -> dict | None:
    """One record, or None when there is none; a damaged file is an error, never silently replaced."""
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
        if not isinstance(rec, dict) or "run_id" not in rec or "config" not in rec:
            raise ValueError("not a tlbench run record (no run_id/config)")
    except (OSError, ValueError) as e:
        raise UserError(f"corrupt record '{path}': {e}; move it away to re-run that run") from None
    return rec


def supersede(folder: Path, record: dict) -> Path:
    """Move an older record of a run aside before its new measurement takes its place."""
    stamp = (record.get("finished") or record.get("started") or "unknown").replace(":", "")
    dest = Path(folder) / "superseded" / f"{record['run_id']}.{stamp}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(run_path(folder, record["run_id"]), dest)
    return dest


@contextlib.contextmanager
def run_lock(folder: Path, run_id: str):
    """Yield None if this process holds the run's lock, else the pid of the runner that does.

    flock is released by the kernel when its holder dies, even by SIGKILL: no stale locks.
    """
    path = Path(folder) / "runs" / f".{run_id}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            yield f.read().strip() or "unknown"
            return
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield None
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_runs(folder: Path) -> list[dict]:
    folder = Path(folder)
    runs_dir = folder / "runs"
    if not runs_dir.is_dir():
        raise UserError(f"'{folder}' holds no results (no runs/ folder); run a suite first: tlbench run SUITE")
    records = [read_record(path) for path in sorted(runs_dir.glob("*.json"))]
    return sorted(records, key=lambda r: (r.get("started") or "", r["run_id"]))


def _run_row(rec: dict) -> dict:
    cfg, env = rec["config"], rec.get("environment", {})
    return {**{k: cfg.get(k) for k in RUN_COLUMNS if k in cfg}, "run_id": rec["run_id"], "suite": rec.get("suite"),
            "backend": env.get("keras_backend"), "device": env.get("device")}


def epochs_frame(records: list[dict]) -> pd.DataFrame:
    rows = [{**_run_row(rec), "status": rec.get("status"), **ep} for rec in records for ep in rec.get("epochs", [])]
    return pd.DataFrame(rows, columns=EPOCH_COLUMNS)


def runs_frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for rec in records:
        steady = [e for e in rec.get("epochs", []) if e["phase"] == "steady"]
        train_s = sum(e["train_seconds"] for e in steady)
        rows.append({**_run_row(rec), "status": rec.get("status"), "error": rec.get("error"),
                     "epochs_done": len(rec.get("epochs", [])),
                     "trainable_params": rec.get("params", {}).get("trainable"),
                     "non_trainable_params": rec.get("params", {}).get("non_trainable"),
                     "steady_images_per_second": sum(e["train_images"] for e in steady) / train_s if train_s else None,
                     "build_seconds": rec.get("build_seconds"),
                     "host_peak_rss_gib": _gib((rec.get("memory") or {}).get("host_peak_rss_bytes")),
                     "accelerator_peak_gib": _gib((rec.get("memory") or {}).get("accelerator_peak_bytes")),
                     "cpu_cores": (rec.get("environment", {}).get("cpu_info") or {}).get("cores"),
                     "others_cpu_fraction": (rec.get("load") or {}).get("others_fraction"),
                     "steal_fraction": (rec.get("load") or {}).get("steal_fraction"),
                     "started": rec.get("started"),
                     "finished": rec.get("finished"), "git_commit": rec.get("environment", {}).get("git", {}).get("commit")})
    return pd.DataFrame(rows)


def _gib(n) -> float | None:
    return round(n / 2**30, 3) if n is not None else None


def rebuild(folder: Path) -> list[dict]:
    """Regenerate the CSV tables from the per-run files; returns the records."""
    records = read_runs(folder)
    atomic_write(Path(folder) / "epochs.csv", epochs_frame(records).to_csv(index=False))
    atomic_write(Path(folder) / "runs.csv", runs_frame(records).to_csv(index=False))
    return records
