"""Baselines per machine, as pytest-benchmark keeps its saved runs per machine folder, numbered.

  baselines/<machine-id>/<suite>/0001_20250131_120000/runs/*.json   the records, copied as they are
  baselines/<machine-id>/<suite>/0001_20250131_120000/suite.yaml    the suite that produced them (when there is one)
  baselines/<machine-id>/<suite>/0001_20250131_120000/machine.json  what the machine id was made from, where the
                                                                   copy came from, when, and the records' commit

Each save is kept: a new one takes the next number (`--force` replaces the latest instead), and
`compare --against-baseline` takes the latest.

The machine id is read from the records' environment, not from the machine running the command,
so a baseline can be saved or looked up anywhere without importing a backend:

  <accelerator or CPU model>[-x<count>][-<usable CPU cores>c]_<keras backend>_<os>[-<arch>]
  e.g. nvidia-h100-80gb-hbm3-26c_tensorflow_linux-x86_64, cpu-amd-epyc-7b13-2c_jax_linux-x86_64

Versions of Keras/TF/JAX and the project commit are deliberately left out: a change of those is
what a comparison against the baseline is meant to test.
"""
from __future__ import annotations

import json
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from .errors import UserError
from .store import Results, atomic_write, run_path

ARCHES = ("x86_64", "amd64", "aarch64", "arm64", "ppc64le", "s390x")


def _slug(text: str) -> str:
    text = re.sub(r"\((r|tm)\)|\bcpu @", "", str(text).lower())
    return re.sub(r"[^a-z0-9.]+", "-", text).strip("-")[:60] or "unknown"


def machine_id(env: dict) -> str:
    count = env.get("accelerator_count") or 0
    cores = (env.get("cpu_info") or {}).get("cores") or env.get("cpu_count")
    # Cores are the CPU's share of the hardware: a 2-core VM and a 64-core server of one CPU model differ.
    device = (_slug(env.get("device") or "unknown") + (f"-x{count}" if count > 1 else "")
              + (f"-{cores}c" if cores else ""))
    plat = str(env.get("platform") or "unknown")
    # platform.platform() carries kernel and libc versions, which change under a fixed machine: keep OS + arch.
    arch = next((a for a in ARCHES if a in plat), None)
    system = _slug(plat.split("-")[0]) + (f"-{arch}" if arch else "")
    return f"{device}_{_slug(env.get('keras_backend') or 'unknown')}_{system}"


def _one(values: set, what: str, folder: Path, hint: str) -> str:
    if len(values) != 1:
        raise UserError(f"'{folder}' holds records of {len(values)} {what}s ({', '.join(sorted(map(str, values)))})"
                        f"; {hint}")
    return values.pop()


def identify(found: Results, name: str | None = None) -> tuple[str, str]:
    """(machine id, suite name) of a results folder's readable records."""
    records, results = found.records, found.folder
    if not records:
        left = f" it can read ({len(found.corrupt)} corrupt record(s) left out)" if found.corrupt else ""
        raise UserError(f"'{results}' holds no runs{left}")
    mid = _one({machine_id(r["environment"]) for r in records}, "machine", results,
               "save or compare one machine's results at a time")
    suite = name or _one({r.get("suite") or r["config"].get("suite") for r in records}, "suite", results,
                         "pass --name")
    return mid, suite


def saves(folder: Path) -> list[Path]:
    """The saves of one machine's baseline of one suite, oldest first."""
    return sorted(p for p in Path(folder).glob("[0-9][0-9][0-9][0-9]_*") if (p / "runs").is_dir())


def _commits(records: list[dict]) -> dict:
    gits = [r["environment"].get("git") or {} for r in records]
    return {"commits": sorted({g["commit"] for g in gits if g.get("commit")}),
            "dirty": any(g.get("dirty") for g in gits)}


def _commit_text(info: dict) -> str:
    """'0592ce2', '0592ce2+dirty', '2 commits', 'none' (not a git checkout)."""
    commits = info.get("commits")
    if commits is None:
        text = "unknown"
    elif len(commits) <= 1:
        text = commits[0][:7] if commits else "none"
    else:
        text = f"{len(commits)} commits"
    return text + ("+dirty" if info.get("dirty") else "")


def _copy(found: Results, mid: str, dest: Path) -> None:
    """The readable records, the suite file and machine.json into dest: not lock files or superseded records."""
    results, records = found.folder, found.records
    (dest / "runs").mkdir(parents=True)
    for record in records:
        shutil.copy2(run_path(results, record["run_id"]), dest / "runs")
    if (results / "suite.yaml").is_file():
        shutil.copy2(results / "suite.yaml", dest / "suite.yaml")
    env = records[0]["environment"]
    info = {"machine_id": mid, "saved_from": str(results.resolve()), "runs": len(records),
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **_commits(records),
            **{k: env.get(k) for k in ("device", "accelerators", "accelerator_count", "keras_backend",
                                       "platform", "versions", "cpu")}}
    atomic_write(dest / "machine.json", json.dumps(info, indent=1, sort_keys=True) + "\n")


def save(found: Results, root: Path, name: str | None = None, force: bool = False) -> tuple[Path, Path | None]:
    """(the new save, the save it replaced or None): a results folder's readable records copied to
    ROOT/<machine-id>/<suite>/<number>_<date>/, the next number, or the latest's with `force`; corrupt records
    stay behind (found.lines() names them)."""
    mid, suite = identify(found, name)
    folder = Path(root) / mid / suite
    earlier = saves(folder)
    replaced = earlier[-1] if force and earlier else None
    latest = int(earlier[-1].name[:4]) if earlier else 0
    number = latest if replaced else latest + 1
    dest = folder / f"{number:04d}_{datetime.now(timezone.utc):%Y%m%d_%H%M%S}"
    tmp = folder / f".{dest.name}.saving"
    shutil.rmtree(tmp, ignore_errors=True)
    _copy(found, mid, tmp)
    # A save is a folder, so it appears by renaming the folder (atomic_write's one-file rename cannot); with
    # --force the latest moves aside first, so that a crash between the two renames loses no records.
    if replaced:
        aside = replaced.with_name(f".{replaced.name}.replaced")
        replaced.rename(aside)
    tmp.rename(dest)
    if replaced:
        shutil.rmtree(aside)
    return dest, replaced


def describe(save: Path) -> dict:
    """What `baseline list` and `compare` say of a save: its name, date, machine, commit and run count."""
    try:
        info = json.loads((save / "machine.json").read_text())
    except (OSError, ValueError):
        info = {}
    return {"machine": save.parent.parent.name, "suite": save.parent.name, "save": save.name,
            "saved": info.get("saved_at", "unknown"), "commit": _commit_text(info),
            "runs": len(list((save / "runs").glob("*.json")))}


def available(root: Path) -> list[Path]:
    """Every save under a baselines root, by machine and suite, oldest first."""
    return sorted(p.parent for p in Path(root).glob("*/*/[0-9][0-9][0-9][0-9]_*/runs") if p.is_dir())


def find(found: Results, root: Path, name: str | None = None) -> Path:
    """The latest save of the baseline for the machine and suite of a results folder's records."""
    mid, suite = identify(found, name)
    have = saves(Path(root) / mid / suite)
    if have:
        return have[-1]
    listing = "\n  ".join(sorted({f"{s.parent.parent.name}/{s.parent.name}" for s in available(root)})) or "(none)"
    raise UserError(f"no baseline for machine '{mid}', suite '{suite}' under '{root}'. Available:\n  {listing}\n"
                    f"Save one on this machine with: tlbench baseline save RESULTS --root {root}")
