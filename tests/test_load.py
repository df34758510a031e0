"""Machine load around a run: CPU accounting deltas, read from crafted snapshots and from a real busy process."""
import os
import subprocess
import sys
import time

from bench import load


def _snap(wall, cpu, processes, loadavg=(0.5, 0.4, 0.3)):
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    return {"wall": wall, "loadavg": list(loadavg), "cpu": dict(zip(names, cpu)), "processes": processes}


def test_shares_of_the_machine_from_crafted_snapshots():
    tick = load._TICK
    me = os.getpid()
    start = _snap(0.0, [0, 0, 0, 0, 0, 0, 0, 0], {me: ("python", 0), 7: ("stress", 0)})
    # 10 s on 2 CPUs = 20 s of CPU time: 8 us, 6 the other process, 2 steal, 4 idle.
    end = _snap(10.0, [14 * tick, 0, 0, 4 * tick, 0, 0, 0, 2 * tick],
                {me: ("python", 8 * tick), 7: ("stress", 5 * tick), 9: ("late", 1 * tick)})
    got = load.during(start, end)
    assert got["cpus"] == 2.0 and got["seconds"] == 10.0
    assert (got["self_fraction"], got["others_fraction"], got["steal_fraction"]) == (0.4, 0.3, 0.1)
    # a process started during the run counts from zero; both are named, busiest first
    assert [(b["name"], b["cores"]) for b in got["busy_processes"]] == [("stress", 0.5), ("late", 0.1)]
    assert load.interference(got) == 0.4
    assert got["loadavg_start"] == [0.5, 0.4, 0.3]


def test_a_busy_neighbour_is_seen_and_named():
    start = load.snapshot()
    # Still running at the end snapshot: a process is named from the two snapshots (one that starts and ends
    # inside the span counts in others_fraction but cannot be named).
    busy = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<4: pass"])
    time.sleep(2.0)
    got = load.during(start, load.snapshot())
    busy.wait()
    assert busy.returncode == 0
    # one core of the machine's for most of the span
    assert got["others_fraction"] >= 0.25 / max(os.cpu_count() / 2, 1)
    assert any(b["name"].startswith("python") and b["cpu_seconds"] >= 1.0 for b in got["busy_processes"])


def test_no_accounting_is_said():
    start = {"wall": 0, "loadavg": None, "cpu": None, "processes": {}}
    assert load.during(start, start) == {"loadavg_start": None, "loadavg_end": None,
                                         "note": "no /proc/stat: CPU accounting unavailable on this platform"}
    assert load.interference(None) is None
