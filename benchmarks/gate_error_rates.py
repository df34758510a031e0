"""Error rates of `tlbench compare`'s rule, measured by resampling real runs of this machine.

A regression gate is only as good as its two error rates: how often it cries regression when nothing
changed (false alarm), and how often it misses a real slowdown. Both depend on the machine's noise, so
they are measured, not assumed: from a pool of real runs of one configuration (benchmarks/suites/
noise-pool.yaml, recorded in benchmarks/records/noise-pool/), many comparisons are drawn:

  A/A          two disjoint sets of m runs from the pool, each run's steady epochs resampled with
               replacement: nothing changed, so REGRESSED is a false alarm
  20 % slower  the same, with every epoch of the current side's runs 1.2x as long: REGRESSED is a
               detection, anything else a miss

Each comparison goes through compare.judge, the function `tlbench compare` decides with, with the
default 10 % time threshold and each side's recorded machine load. The script prints the rates per m
and the smallest m that keeps false alarms at or under 5 % and detects at least 90 %, and writes them
with the command and the pool's provenance to benchmarks/results/gate_error_rates.json.

  .venv/bin/python benchmarks/gate_error_rates.py [--records benchmarks/records/noise-pool] [--draws 2000]
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from bench import compare, load, store
from bench.config import match_key
from bench.environment import hardware_label

HERE = Path(__file__).resolve().parent
SLOWDOWN = 1.2
THRESHOLD = compare.DEFAULTS["time"]
GOAL = {"false_alarm_at_most": 0.05, "detection_at_least": 0.90}


def pools(records: list[dict]) -> dict[str, list[dict]]:
    """Finished runs by configuration, each with its steady epoch seconds and load."""
    out: dict[str, list[dict]] = {}
    for r in records:
        steady = [e["epoch_seconds"] for e in r.get("epochs", []) if e.get("phase") == "steady"]
        if r.get("status") == "ok" and steady:
            out.setdefault(match_key(r), []).append(
                {"run_id": r["run_id"], "mode": r["config"]["mode"], "steady": np.array(steady),
                 "load": load.interference(r.get("load"))})
    return out


def _side(rng, runs: list[dict], factor: float) -> tuple[list[float], float | None]:
    """Per-run medians of epochs resampled with replacement, and the side's median load."""
    medians = [float(np.median(rng.choice(r["steady"], len(r["steady"])))) * factor for r in runs]
    loads = [r["load"] for r in runs if r["load"] is not None]
    return medians, float(np.median(loads)) if loads else None


def rates(rng, pool: list[dict], m: int, draws: int) -> dict:
    counts = {"aa": {v: 0 for v in compare.VERDICTS}, "slow": {v: 0 for v in compare.VERDICTS}}
    for _ in range(draws):
        pick = rng.permutation(len(pool))[:2 * m]
        base = [pool[i] for i in pick[:m]]
        cur = [pool[i] for i in pick[m:]]
        b, lb = _side(rng, base, 1.0)
        for case, factor in (("aa", 1.0), ("slow", SLOWDOWN)):
            c, lc = _side(rng, cur, factor)
            counts[case][compare.judge("time", b, c, THRESHOLD, (lb, lc))[1]] += 1
    return {"runs_per_side": m, "draws": draws,
            "false_alarm": counts["aa"]["REGRESSED"] / draws, "aa_inconclusive": counts["aa"]["inconclusive"] / draws,
            "detection": counts["slow"]["REGRESSED"] / draws,
            "slow_inconclusive": counts["slow"]["inconclusive"] / draws}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", default=str(HERE / "records" / "noise-pool"))
    p.add_argument("--draws", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(HERE / "results" / "gate_error_rates.json"))
    args = p.parse_args(argv)
    records = store.read_runs(Path(args.records))
    rng = np.random.default_rng(args.seed)
    result = {"command": "python benchmarks/gate_error_rates.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "rule": "compare.judge, time metric, threshold +10 %, Welch 95 % interval over per-run medians, "
                      f"load tolerance {compare.LOAD_TOLERANCE}",
              "slowdown": SLOWDOWN, "goal": GOAL, "configurations": []}
    for key, pool in pools(records).items():
        rows = [rates(rng, pool, m, args.draws) for m in range(1, len(pool) // 2 + 1)]
        fine = [r["runs_per_side"] for r in rows if r["false_alarm"] <= GOAL["false_alarm_at_most"]
                and r["detection"] >= GOAL["detection_at_least"]]
        hw = {hardware_label(r.get("environment") or {}) for r in records if match_key(r) == key}
        medians = sorted(float(np.median(r["steady"])) for r in pool)
        result["configurations"].append({
            "mode": pool[0]["mode"], "pool_runs": len(pool), "hardware": sorted(hw),
            "run_medians_s": [round(v, 3) for v in medians],
            "run_to_run_spread": round(medians[-1] / medians[0] - 1, 3),
            "recommended_runs_per_side": fine[0] if fine else None, "rates": rows})
        print(f"{pool[0]['mode']}: {len(pool)} real runs, per-run median steady epoch {medians[0]:.2f}–"
              f"{medians[-1]:.2f} s ({100 * (medians[-1] / medians[0] - 1):.0f} % apart)")
        print("  runs/side  false alarm (A/A)  A/A inconclusive  detects 20 % slowdown  slowdown inconclusive")
        for r in rows:
            print(f"  {r['runs_per_side']:9d}  {100 * r['false_alarm']:16.1f}%  {100 * r['aa_inconclusive']:15.1f}%"
                  f"  {100 * r['detection']:20.1f}%  {100 * r['slow_inconclusive']:20.1f}%")
        print(f"  smallest runs/side with false alarms <= 5 % and detection >= 90 %: {fine[0] if fine else 'none'}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
