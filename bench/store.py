"""Records on disk. One JSON file per run is the truth; the CSV tables are rebuilt from them.

  RESULTS/runs/<run_id>.json   everything about one run (config, environment, per-epoch rows)
  RESULTS/epochs.csv           one row per (run, epoch)       -- rebuilt, never appended
  RESULTS/runs.csv             one row per run
  RESULTS/superseded/          records replaced by a newer measurement of the same run, kept
  RESULTS/damaged/             records `tlbench run` found corrupt and ran again, kept with a .why.txt beside
  RESULTS/suite.yaml           the suite file the records came from (its name, description, thresholds)

Each file is written to a temporary name and renamed into place, so a crash leaves either
the old file or the new one, never half of one.

Every record is checked against the schema (schema.py) as it is read. A corrupt one (not JSON, the
wrong shape, a file named other than its run_id, a directory or a dangling link named *.json) is left
out by name and reason: the reading commands say so and exit 2 after their output; `run` moves it to
damaged/ and runs it again. Nothing else in the folder is changed by reading it.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import schema
from .errors import SuiteErrors, UserError

SCHEMA = schema.VERSION
RUN_COLUMNS = ["run_id", "suite", "backbone", "dataset", "mode", "repeat", "weights", "input_size",
               "batch_size", "epochs", "optimizer", "learning_rate", "precision", "jit_compile", "backend",
               "device"]
EPOCH_COLUMNS = RUN_COLUMNS + ["status", "epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy",
                               "epoch_seconds", "train_seconds", "val_seconds", "train_images",
                               "images_per_second"]


_UMASK = os.umask(0)
os.umask(_UMASK)


class StorageError(UserError):
    """A results file could not be written (disk full, read-only folder, quota): the user's to fix, not a bug."""

    def __init__(self, path: Path, error: OSError):
        full = error.errno in (errno.ENOSPC, errno.EDQUOT)
        super().__init__(f"could not write '{path}': {error.strerror or error}{_free(path) if full else ''}")


def _free(path: Path) -> str:
    folder = Path(path).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return f" ({shutil.disk_usage(folder).free / 2**20:,.1f} MiB free on that file system)"
    except OSError:
        return ""


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "w"):
    """A file opened for writing under a temporary name, renamed to `path` only once complete: a crash leaves
    the old file or the new one, never half of one. For writers that stream (np.savez); else atomic_write."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise StorageError(path, e) from None
        raise


def atomic_write(path: Path, content: str | bytes) -> None:
    with atomic_file(path, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)


def run_path(folder: Path, run_id: str) -> Path:
    return Path(folder) / "runs" / f"{run_id}.json"


def write_run(folder: Path, record: dict) -> Path:
    path = run_path(folder, record["run_id"])
    atomic_write(path, json.dumps(record, indent=1, sort_keys=True, default=str) + "\n")
    return path


class CorruptRecord(UserError):
    """A file in runs/ that is no readable record of the schema: named, with what is wrong, and left out."""

    def __init__(self, path: Path, problem: str):
        super().__init__(f"corrupt record '{path}': {problem}")
        self.path, self.problem = Path(path), problem


def _parse(path: Path):
    if path.is_symlink() and not path.exists():
        raise CorruptRecord(path, "a symbolic link to nothing")
    if not path.is_file():
        raise CorruptRecord(path, "a directory, not a record file" if path.is_dir() else "not a regular file")
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
        # JSON may escape half a UTF-16 pair ("\\udc80"): a string no output can print
        json.dumps(record, ensure_ascii=False).encode("utf-8")
        return record
    except OSError as e:
        raise CorruptRecord(path, f"cannot be read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise CorruptRecord(path, f"not UTF-8 text (byte {e.start})") from None
    except UnicodeEncodeError:
        raise CorruptRecord(path, "holds text that is not valid Unicode (an unpaired surrogate escape)") from None
    except RecursionError:
        raise CorruptRecord(path, "not valid JSON: nested too deeply") from None
    except ValueError as e:
        raise CorruptRecord(path, f"not valid JSON: {str(e)[:200]}") from None


def read_record(path: Path) -> dict | None:
    """One record, or None when there is none; raises CorruptRecord for a file that is not a valid one,
    including a record under another run's file name (a copy would otherwise count as a repeat). In superseded/
    the name is <run_id>.<finished> (superseded_path)."""
    path = Path(path)
    if not os.path.lexists(path):
        return None
    record = _parse(path)
    if found := schema.problems(record):
        raise CorruptRecord(path, schema.summary(found))
    if record["run_id"] != (path.stem.rsplit(".", 1)[0] if path.parent.name == "superseded" else path.stem):
        raise CorruptRecord(path, f"its run_id is '{record['run_id']}', not the file's name: a copy or a renamed "
                                  "file, left out so that it does not count twice")
    return record


def _stamp(record: dict) -> str:
    """A record's finish time as part of a file name; damage may have left any text there."""
    text = str(record.get("finished") or record.get("started") or "unknown")
    return re.sub(r"[^0-9A-Za-z+-]", "", text)[:40] or "unknown"


def superseded_path(folder: Path, record: dict) -> Path:
    """Where an older record of a run is kept: RESULTS/superseded/<run_id>.<finished>.json."""
    return Path(folder) / "superseded" / f"{record['run_id']}.{_stamp(record)}.json"


def supersede(folder: Path, record: dict) -> Path:
    """Move an older record of a run aside before its new measurement takes its place."""
    dest = superseded_path(folder, record)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(run_path(folder, record["run_id"]), dest)
    return dest


def set_aside(folder: Path, corrupt: CorruptRecord, now: str) -> Path:
    """Move a corrupt record to damaged/, with why beside it, so that its run is measured again; never deleted."""
    dest = Path(folder) / "damaged" / f"{corrupt.path.stem}.{_stamp({'finished': now})}.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(corrupt.path, dest)
    atomic_write(dest.with_name(dest.name + ".why.txt"), f"{corrupt}\n")
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


@dataclass
class Results:
    """What a results folder holds: its readable records, and what was left out of them or looks amiss."""

    folder: Path
    records: list[dict]
    corrupt: list[CorruptRecord] = field(default_factory=list)
    suite: dict = field(default_factory=dict)  # the suite file run copied beside the records; {} if none
    suite_problem: str | None = None  # why that copy could not be read
    notes: list[str] = field(default_factory=list)  # not damage: records of another suite

    @property
    def damaged(self) -> bool:
        """A record was left out: a reading command says so and exits 2 after its output."""
        return bool(self.corrupt)

    def lines(self) -> list[str]:
        suite = [f"{self.suite_problem}; read without it (no suite name, description, reference or "
                 "thresholds from it)"] if self.suite_problem else []
        return [f"left out {c}" for c in self.corrupt] + suite + self.notes

    def footnote(self) -> list[str]:
        """For a figure, where the whole list would crowd out the plot."""
        return [f"{self.folder}: left out {len(self.corrupt)} corrupt record(s), named in the command's warnings"
                ] if self.corrupt else []

    def warn(self) -> None:
        for line in self.lines():
            print(f"warning: {line}", file=sys.stderr)


def _suite_copy(folder: Path) -> tuple[dict, str | None]:
    """The suite file beside the records, read as `tlbench run` reads suites (size, depth, encoding checked)."""
    from .suite import read

    path = folder / "suite.yaml"
    if not os.path.lexists(path):
        return {}, None
    try:
        return read(path)[0], None
    except SuiteErrors as e:
        return {}, "; ".join(map(str, e.errors))


def _other_suites(records: list[dict], suite: dict) -> list[str]:
    """Records of another suite than the folder's: still read (their configuration may match), but said."""
    names = [str(r.get("suite") or r["config"]["suite"]) for r in records]
    expected = suite.get("name") if isinstance(suite.get("name"), str) else None
    if expected is None and len(set(names)) > 1:  # no suite file to say which: the most common one
        expected = max(set(names), key=names.count)
    others = [(n, r["run_id"]) for n, r in zip(names, records) if expected is not None and n != expected]
    if not others:
        return []
    return [f"{len(others)} record(s) of suite {', '.join(sorted({n for n, _ in others}))} in a folder of suite "
            f"'{expected}' (e.g. {others[0][1]}): read with the rest; move them away if they do not belong"]


def results_folders(root: Path, deep: bool = False) -> list[Path]:
    """The suite results folders (those holding runs/) at root: root itself, and those in it: its children, or
    with `deep` every folder beneath it (hidden ones aside)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [root] if (root / "runs").is_dir() else []
    return found + sorted(p.parent for p in (root.rglob("runs") if deep else root.glob("*/runs"))
                          if p.is_dir() and p.parent != root
                          and not any(part.startswith(".") for part in p.relative_to(root).parts))


def scan(folder: Path) -> Results:
    """Every record of a folder checked against the schema; the corrupt ones set apart, never changed."""
    folder = Path(folder)
    runs_dir = folder / "runs"
    if not runs_dir.is_dir():
        raise UserError(f"'{folder}' holds no results (no runs/ folder); run a suite first: tlbench run SUITE")
    try:
        paths = sorted(runs_dir.glob("*.json"))
    except OSError as e:
        raise UserError(f"cannot read '{runs_dir}': {e.strerror or e}") from None
    records, corrupt = [], []
    for path in paths:
        try:
            record = read_record(path)
        except CorruptRecord as e:
            corrupt.append(e)
            continue
        if record is not None:  # None: removed since the listing, by a concurrent runner's supersede
            records.append(record)
    suite, problem = _suite_copy(folder)
    records.sort(key=lambda r: (r.get("started") or "", r["run_id"]))
    return Results(folder, records, corrupt, suite, problem, _other_suites(records, suite))


def read_runs(folder: Path) -> list[dict]:
    """The readable records of a folder; scan() also says what was left out."""
    return scan(folder).records


def _run_row(rec: dict) -> dict:
    cfg, env = rec["config"], rec["environment"]
    return {**{k: cfg.get(k) for k in RUN_COLUMNS if k in cfg}, "run_id": rec["run_id"], "suite": rec.get("suite"),
            "backend": env.get("keras_backend"), "device": env.get("device")}


def epochs_frame(records: list[dict]) -> pd.DataFrame:
    # the run's columns last: an epoch row with a stray "run_id" must not move it to another run
    rows = [{**ep, **_run_row(rec), "status": rec["status"]} for rec in records for ep in rec["epochs"]]
    return pd.DataFrame(rows, columns=EPOCH_COLUMNS)


def runs_frame(records: list[dict]) -> pd.DataFrame:
    rows = []
    for rec in records:
        steady = [e for e in rec.get("epochs", []) if e["phase"] == "steady"]
        train_s = sum(e["train_seconds"] for e in steady)
        rows.append({**_run_row(rec), "status": rec.get("status"), "error": rec.get("error"),
                     "epochs_done": len(rec.get("epochs", [])), **model_size(rec),
                     "steady_images_per_second": sum(e["train_images"] for e in steady) / train_s if train_s else None,
                     "build_seconds": rec.get("build_seconds"),
                     "host_peak_rss_gib": _gib((rec.get("memory") or {}).get("host_peak_rss_bytes")),
                     "accelerator_peak_gib": _gib((rec.get("memory") or {}).get("accelerator_peak_bytes")),
                     "cpu_cores": (rec["environment"].get("cpu_info") or {}).get("cores"),
                     "others_cpu_fraction": (rec.get("load") or {}).get("others_fraction"),
                     "steal_fraction": (rec.get("load") or {}).get("steal_fraction"),
                     "started": rec.get("started"),
                     "finished": rec.get("finished"),
                     "git_commit": (rec["environment"].get("git") or {}).get("commit")})
    return pd.DataFrame(rows)


def _gib(n) -> float | None:
    return round(n / 2**30, 3) if n is not None else None


def model_size(record: dict) -> dict:
    """The run's model: parameters, and GFLOPs per image of a forward pass and of a training step (flops.py;
    None in records made before they were counted)."""
    params, flops = record.get("params") or {}, record.get("flops") or {}
    return {"trainable_params": params.get("trainable"), "non_trainable_params": params.get("non_trainable"),
            **{f"{k}_gflops_per_image": flops[k] / 1e9 if flops.get(k) is not None else None
               for k in ("forward", "train")}}


@contextlib.contextmanager
def folder_lock(folder: Path):
    """Held while the derived files (CSVs, table, figures, report) are rebuilt: concurrent runners take
    turns, and each rebuilds from the records on disk at its turn, so the last one leaves them current."""
    path = Path(folder) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def rebuild(folder: Path) -> Results:
    """Regenerate the CSV tables from the per-run files; returns what was read. Hold folder_lock around it
    (and around whatever else is derived from the same records)."""
    found = scan(folder)
    atomic_write(Path(folder) / "epochs.csv", epochs_frame(found.records).to_csv(index=False))
    atomic_write(Path(folder) / "runs.csv", runs_frame(found.records).to_csv(index=False))
    return found
