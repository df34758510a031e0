"""`tlbench merge OUT FOLDER…`: the results folders of a suite's shards combined into one, OUT.

Each FOLDER is a suite's results folder (RESULTS/<suite>, holding runs/), or a results root holding one of
OUT's name (RESULTS/<OUT's name>/runs/): `merge results/smoke results/shards/*` takes each shard's
results/shards/<i>/smoke. OUT's own records take part like any folder's, so nothing in it is lost.

Per run id: copies with the same content count once; of different measurements (different keys) the latest
to finish is the run and the others go to OUT/superseded/, as a re-run would have moved them; the same key
with different content is a conflict. Conflicts and corrupt records refuse the whole merge before a file is
written. Every file is written atomically, and a second merge of the same folders changes nothing.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from . import store
from .errors import UserError


@dataclass(frozen=True)
class _Copy:
    """One record file as read: where it is, what it holds, its exact bytes."""

    path: Path
    record: dict
    data: bytes


def sources(out: Path, folders: list[str]) -> list[Path]:
    """Each FOLDER as a suite results folder: itself if it holds runs/, else its subfolder of OUT's name."""
    found = []
    for folder in map(Path, folders):
        suite = folder if (folder / "runs").is_dir() else folder / out.name
        if not (suite / "runs").is_dir():
            raise UserError(f"merge: '{folder}' holds neither runs/ nor {out.name}/runs/: give each shard's "
                            f"suite results folder (RESULTS/{out.name}) or its results root (RESULTS)")
        found.append(suite)
    return found


def _read(folders: list[Path]) -> tuple[dict[str, list[_Copy]], list[str]]:
    """Every record of the folders by run id, and the corrupt files named."""
    copies: dict[str, list[_Copy]] = {}
    corrupt = []
    for folder in folders:
        found = store.scan(folder)
        corrupt += [str(c) for c in found.corrupt]
        for record in found.records:
            path = store.run_path(folder, record["run_id"])
            copies.setdefault(record["run_id"], []).append(_Copy(path, record, path.read_bytes()))
    return copies, corrupt


def _choose(copies: list[_Copy]) -> tuple[_Copy, list[_Copy], list[str]]:
    """(the run's record, the older measurements, conflicts): identical copies count once."""
    distinct: list[_Copy] = []
    for copy in copies:
        if all(copy.record != seen.record for seen in distinct):
            distinct.append(copy)
    pairs = [(a, b) for i, a in enumerate(distinct) for b in distinct[i + 1:]]
    conflicts = [f"'{a.path}' and '{b.path}' are records of the same measurement (key {a.record.get('key')}) "
                 "that differ: keep one, move the other away, and merge again"
                 for a, b in pairs if a.record.get("key") == b.record.get("key")]
    ordered = sorted(distinct, key=lambda c: (str(c.record.get("finished") or ""), c.data))
    return ordered[-1], ordered[:-1], conflicts


def _place(planned: dict[Path, tuple[bytes, Path]], dest: Path, data: bytes, source: Path) -> str | None:
    """Plan to write `data` to dest unless it already holds it; a conflict when dest is to hold other bytes."""
    held = planned.get(dest, (dest.read_bytes(), dest) if dest.is_file() else None)
    if held is None:
        planned[dest] = (data, source)
    elif held[0] != data:
        return f"'{source}' and '{held[1]}' differ but both are kept as '{dest}': move one away and merge again"
    return None


def _plan(out: Path, folders: list[Path]) -> tuple[dict[Path, tuple[bytes, Path]], dict[Path, tuple[bytes, Path]]]:
    """(superseded files to write, run records to write), each dest -> (bytes, source); UserError naming every
    corrupt record and conflict, before anything is written."""
    copies, problems = _read([out, *folders] if (out / "runs").is_dir() else folders)
    kept: dict[Path, tuple[bytes, Path]] = {}
    runs: dict[Path, tuple[bytes, Path]] = {}
    for run_id in sorted(copies):
        newest, older, conflicts = _choose(copies[run_id])
        problems += conflicts
        for copy in older:
            problems.append(_place(kept, store.superseded_path(out, copy.record), copy.data, copy.path))
        dest = store.run_path(out, run_id)
        if not (dest.is_file() and dest.read_bytes() == newest.data):
            runs[dest] = (newest.data, newest.path)
    for folder in folders:
        for path in sorted((folder / "superseded").glob("*.json")):
            problems.append(_place(kept, out / "superseded" / path.name, path.read_bytes(), path))
    problems = [p for p in problems if p]
    if problems:
        raise UserError("merge refused, nothing written:\n  " + "\n  ".join(problems))
    return kept, runs


def _suite_file(out: Path, folders: list[Path]) -> None:
    """OUT's suite.yaml, from the first folder with one if OUT has none; a warning for each that differs."""
    copies = [f / "suite.yaml" for f in folders if (f / "suite.yaml").is_file()]
    target = out / "suite.yaml"
    if copies and not target.is_file():
        store.atomic_write(target, copies[0].read_bytes())
    for copy in copies:
        if copy.read_bytes() != target.read_bytes():
            print(f"warning: '{copy}' differs from '{target}', which is kept", file=sys.stderr)


def merge(out: Path, folders: list[str]) -> str:
    """Combine the folders' records into OUT (see the module's doc); what was done, in a line."""
    out = Path(out)
    found = sources(out, folders)
    with store.folder_lock(out):
        kept, runs = _plan(out, found)
        for dest, (data, _) in {**kept, **runs}.items():  # older copies first: none is lost if a kill comes
            store.atomic_write(dest, data)
        _suite_file(out, found)
    return (f"merged {len(found)} folder(s) into {out}: {len(runs)} record(s) written to runs/, {len(kept)} older "
            "one(s) to superseded/; the rest were there already")
