"""Baselines per machine, as pytest-benchmark keeps its saved runs per machine folder.

  baselines/<machine-id>/<suite>/runs/*.json   the records, copied as they are
  baselines/<machine-id>/<suite>/suite.yaml    the suite that produced them (when the results folder has it)
  baselines/<machine-id>/<suite>/machine.json  what the machine id was made from, and where the copy came from

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


def save(found: Results, root: Path, name: str | None = None) -> Path:
    """Copy a results folder's readable records to ROOT/<machine-id>/<suite>/, replacing any earlier baseline
    there; corrupt ones stay behind (found.lines() names them)."""
    results, root, records = found.folder, Path(root), found.records
    mid, suite = identify(found, name)
    dest = root / mid / suite
    tmp = dest.with_name(f".{suite}.saving")
    shutil.rmtree(tmp, ignore_errors=True)
    # A baseline is one snapshot: runs left from an earlier save must not mix in, so replace the folder.
    # Only the records: not lock files or superseded measurements.
    (tmp / "runs").mkdir(parents=True)
    for record in records:
        shutil.copy2(run_path(results, record["run_id"]), tmp / "runs")
    if (results / "suite.yaml").is_file():
        shutil.copy2(results / "suite.yaml", tmp / "suite.yaml")
    env = records[0]["environment"]
    info = {"machine_id": mid, "saved_from": str(results.resolve()), "runs": len(records),
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **{k: env.get(k) for k in ("device", "accelerators", "accelerator_count", "keras_backend",
                                       "platform", "versions", "cpu")}}
    atomic_write(tmp / "machine.json", json.dumps(info, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def available(root: Path) -> list[str]:
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in Path(root).glob("*/*/runs") if p.is_dir())


def find(found: Results, root: Path, name: str | None = None) -> Path:
    """The baseline saved for the machine and suite of a results folder's records."""
    mid, suite = identify(found, name)
    dest = Path(root) / mid / suite
    if (dest / "runs").is_dir():
        return dest
    have = available(root)
    listing = "\n  ".join(have) if have else "(none)"
    raise UserError(f"no baseline for machine '{mid}', suite '{suite}' under '{root}'. Available:\n  {listing}\n"
                    f"Save one on this machine with: tlbench baseline save RESULTS --root {root}")
