"""Records on disk. One JSON file per run is the truth; the CSV tables are rebuilt from them.

  RESULTS/runs/<run_id>.json   everything about one run (config, environment, per-epoch rows)
  RESULTS/epochs.csv           one row per (run, epoch)       -- rebuilt, never appended
  RESULTS/runs.csv             one row per run

Each file is written to a temporary name and renamed into place, so a crash leaves either
the old file or the new one, never half of one.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pandas as pd

from .errors import UserError

SCHEMA = 1
RUN_COLUMNS = ["run_id", "suite", "backbone", "dataset", "mode", "repeat", "weights", "input_size",
               "batch_size", "epochs", "optimizer", "learning_rate", "precision", "jit_compile", "backend",
               "device"]
EPOCH_COLUMNS = RUN_COLUMNS + ["status", "epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy",
                               "epoch_seconds", "train_seconds", "val_seconds", "train_images",
                               "images_per_second"]


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
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


def read_runs(folder: Path) -> list[dict]:
    folder = Path(folder)
    runs_dir = folder / "runs"
    if not runs_dir.is_dir():
        raise UserError(f"'{folder}' holds no results (no runs/ folder); run a suite first: tlbench run SUITE")
    records = []
    for path in sorted(runs_dir.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
            if not isinstance(rec, dict) or "run_id" not in rec or "config" not in rec:
                raise ValueError("not a tlbench run record (no run_id/config)")
        except (OSError, ValueError) as e:
            raise UserError(f"corrupt record '{path}': {e}") from None
        records.append(rec)
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
                     "build_seconds": rec.get("build_seconds"), "started": rec.get("started"),
                     "finished": rec.get("finished"), "git_commit": rec.get("environment", {}).get("git", {}).get("commit")})
    return pd.DataFrame(rows)


def rebuild(folder: Path) -> list[dict]:
    """Regenerate the CSV tables from the per-run files; returns the records."""
    records = read_runs(folder)
    atomic_write(Path(folder) / "epochs.csv", epochs_frame(records).to_csv(index=False))
    atomic_write(Path(folder) / "runs.csv", runs_frame(records).to_csv(index=False))
    return records
