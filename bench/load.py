"""How busy the machine was while a run ran: the evidence that tells a slower code path from busier neighbours.

On a shared VM, steady epochs of one run have varied 7.0-11.1 s and whole runs 13-85 % as other tenants
came and went. So each run records, at its start and its end, the load average and a snapshot of the
kernel's CPU accounting; their difference says, for the span of the run:

  steal_fraction        CPU time the hypervisor gave to other guests (/proc/stat steal), of all CPU time
  others_fraction       CPU time other processes of this machine used, of all CPU time
  self_fraction         CPU time this process used
  busy_processes        the other processes that used the most CPU during the run (name, pid, cores)

Each epoch gets the same shares from two cheaper readings (`mark`, `epoch`: the kernel's totals and this
process's own ticks, no scan of every process), so a slow epoch can be set beside what else ran during it.

All fractions are of the whole machine's CPU capacity (all its logical CPUs), so 0.5 on a 2-core
machine means one core's worth. Linux only; elsewhere the record says so and holds no numbers.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
TOP = 3  # busy processes named per run
BUSY_CORES = 0.05  # a process using less than 5 % of a core over the run is not worth naming


def _loadavg() -> list[float] | None:
    try:
        return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def _cpu_ticks() -> dict[str, int] | None:
    """The aggregate 'cpu' line of /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    return {n: int(v) for n, v in zip(names, fields[1:])}


def _own_ticks() -> int | None:
    """User + system ticks of this process, all its threads."""
    try:
        text = Path("/proc/self/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2:].split()
    return int(rest[11]) + int(rest[12])


def _process_ticks() -> dict[int, tuple[str, int]]:
    """pid -> (command name, user + system ticks) of every process readable now."""
    out = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # gone since the listing, or not ours to read
        # The name sits in parentheses and may itself hold spaces or parentheses.
        name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:].split()
        out[int(entry.name)] = (name, int(rest[11]) + int(rest[12]))
    return out


def snapshot() -> dict:
    """What a later `during` needs, plus the load average now."""
    return {"wall": time.monotonic(), "loadavg": _loadavg(), "cpu": _cpu_ticks(),
            "processes": _process_ticks() if Path("/proc").is_dir() else {}}


def mark() -> dict:
    """What `epoch` needs at a span's start and end: two small files, read outside the timed span."""
    return {"cpu": _cpu_ticks(), "own": _own_ticks()}


def epoch(start: dict, end: dict) -> dict | None:
    """One epoch's `load`: the 1-minute load average at its end and the shares of the machine that others
    and the hypervisor took during it; None where the kernel's accounting is missing or saw no tick."""
    if None in (start["cpu"], end["cpu"], start["own"], end["own"]):
        return None
    delta = {k: end["cpu"][k] - start["cpu"][k] for k in start["cpu"]}
    shares = _shares(delta, end["own"] - start["own"])
    return shares and {"loadavg_1min": (_loadavg() or [None])[0], **shares}


def _shares(delta: dict[str, int], mine: int) -> dict | None:
    """Fractions of all CPU time in a span of /proc/stat ticks, given this process's own ticks."""
    total = sum(delta.values())
    if total <= 0:
        return None
    busy = total - delta["idle"] - delta["iowait"]
    others = max(busy - delta["steal"] - mine, 0)
    return {"steal_fraction": round(delta["steal"] / total, 4), "others_fraction": round(others / total, 4),
            "self_fraction": round(mine / total, 4)}


def during(start: dict, end: dict, own_pids: set[int] | None = None) -> dict:
    """The record's `load`: load averages at both ends, and who used the CPU in between."""
    own = own_pids or {os.getpid()}
    out = {"loadavg_start": start["loadavg"], "loadavg_end": end["loadavg"]}
    if start["cpu"] is None or end["cpu"] is None:
        return {**out, "note": "no /proc/stat: CPU accounting unavailable on this platform"}
    delta = {k: end["cpu"][k] - start["cpu"][k] for k in start["cpu"]}
    # A process started during the run counts from zero: its whole CPU time fell inside the run.
    per_process = {pid: ticks - start["processes"].get(pid, ("", 0))[1]
                   for pid, (_, ticks) in end["processes"].items()}
    shares = _shares(delta, sum(per_process.get(pid, 0) for pid in own))
    if shares is None:
        return {**out, "note": "the run was too short for the kernel's CPU accounting"}
    seconds = max(end["wall"] - start["wall"], 1e-9)
    top = sorted(((t, pid) for pid, t in per_process.items() if pid not in own), reverse=True)[:TOP]
    return {**out, "seconds": round(seconds, 3), "cpus": round(sum(delta.values()) / _TICK / seconds, 2), **shares,
            "busy_processes": [{"pid": pid, "name": end["processes"][pid][0], "cpu_seconds": round(t / _TICK, 2),
                                "cores": round(t / _TICK / seconds, 2)}
                               for t, pid in top if t / _TICK / seconds >= BUSY_CORES]}


def interference(load: dict | None) -> float | None:
    """One number for comparing two runs' conditions: the share of the machine others took (steal included)."""
    if not load or load.get("others_fraction") is None:
        return None
    return load["others_fraction"] + load.get("steal_fraction", 0.0)
