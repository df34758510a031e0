"""Your run beside the published one: the same suite measured on two machines, configuration by configuration.

Not a regression gate (that is compare.py, on one machine): here the machines differ on purpose, and the
question is how. Per configuration (matched on the whole resolved configuration, suite name and repeat aside):

  accuracy   validation accuracy at the reported epochs: yours - published, in points, with Welch's 95 %
             interval over the per-run values; "within noise" when the interval includes no change
  time       steady seconds per epoch and the first epoch: yours / published, a ratio with its interval
             (over the per-run medians); "faster" or "slower" only when the interval excludes 1

An absolute time is its machine's on its day, so the ratio is the number to read; both machines are named.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from . import stats
from .compare import by_config
from .environment import hardware_label
from .errors import UserError
from .store import Results, scan
from .tables import cell, markdown_table, mode_order, pct, row_label, run_values, secs

COLUMNS = ["configuration", "metric", "published", "yours", "change", "interval", "reading"]


def _side(found: Results) -> dict[str, list[dict]]:
    if not found.records:
        raise UserError(f"'{found.folder}' holds no finished runs to set beside the other side")
    return by_config([r for r in found.records if r.get("status") == "ok"])


def machine(records: list[dict]) -> str:
    """'CPU: AMD EPYC · 2 cores, 9 runs at commit 977f244 on 2026-11-29': whose numbers these are."""
    envs = [r.get("environment") or {} for r in records]
    hardware = "; ".join(sorted({hardware_label(e) for e in envs}))
    commits = sorted({(e.get("git") or {}).get("commit", "")[:7] or "unknown" for e in envs})
    days = sorted({str(r.get("started", ""))[:10] for r in records})
    when = days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"
    return f"{hardware}, {len(records)} runs at commit {', '.join(commits)} on {when}"


def _accuracy_row(label: str, n: int, pub: list[float], mine: list[float]) -> dict:
    iv = stats.difference(pub, mine, scale=100)
    known = math.isfinite(iv.low)
    reading = ("within noise" if not known or iv.low <= 0 <= iv.high
               else ("higher" if iv.low > 0 else "lower") + " beyond noise")
    return {"configuration": label, "metric": f"val acc @ {n}", "published": _cell(pub, pct),
            "yours": _cell(mine, pct), "change": f"{iv.estimate:+.1f} pt",
            "interval": f"{iv.low:+.1f} to {iv.high:+.1f} pt" if known else "— (one run a side)",
            "reading": reading if known else "one run a side: noise unknown"}


def _time_row(label: str, metric: str, pub: list[float], mine: list[float]) -> dict:
    iv = stats.ratio(pub, mine)
    known = math.isfinite(iv.low) and math.isfinite(iv.high)
    if not known:
        reading = "one run a side: noise unknown"
    elif iv.high < 1:
        reading = f"yours {1 / iv.estimate:.2f}× faster"
    elif iv.low > 1:
        reading = f"yours {iv.estimate:.2f}× slower"
    else:
        reading = "same within noise"
    return {"configuration": label, "metric": metric, "published": _cell(pub, secs), "yours": _cell(mine, secs),
            "change": f"×{iv.estimate:.2f}", "interval": f"×{iv.low:.2f} to ×{iv.high:.2f}" if known else "—",
            "reading": reading}


def _cell(values: list[float], fmt) -> str:
    """'86.3% [86.0–86.5] n=3', as the table writes a cell."""
    d = stats.describe(values)
    return cell({**{f"v_{k}": v for k, v in d.items()}, "ok": 1, "runs": 1}, "v", fmt)


def _rows(label: str, pub: list[dict], mine: list[dict], epochs: list[int]) -> list[dict]:
    pv, mv = [run_values(r, epochs) for r in pub], [run_values(r, epochs) for r in mine]

    def column(values, col):
        return [v[col] for v in values if not math.isnan(v[col])]

    rows = []
    for n in epochs:
        p, m = column(pv, f"val_acc_{n}"), column(mv, f"val_acc_{n}")
        if p and m:
            rows.append(_accuracy_row(label, n, p, m))
    for metric, col in (("steady s/epoch", "steady_epoch_seconds"), ("first epoch", "first_epoch_seconds")):
        p, m = column(pv, col), column(mv, col)
        if p and m:
            rows.append(_time_row(label, metric, p, m))
    return rows


def beside(published: Path, yours: Path) -> tuple[str, pd.DataFrame]:
    """The Markdown text and the rows of yours beside published."""
    pub_found, mine_found = scan(published), scan(yours)
    pub, mine = _side(pub_found), _side(mine_found)
    common = [k for k in pub if k in mine]
    if not common:
        raise UserError(f"nothing to set beside: no configuration of '{published}' finished in '{yours}' "
                        "(matched on the whole resolved configuration, suite name and repeat aside)")
    common.sort(key=lambda k: mode_order(pub[k][0]["config"]))
    rows = []
    for k in common:
        cfg = pub[k][0]["config"]
        epochs = sorted({1, int(cfg.get("epochs", 1))})
        rows += _rows(row_label(cfg), pub[k], mine[k], epochs)
    table = pd.DataFrame(rows, columns=COLUMNS)
    only = sorted({row_label(pub[k][0]["config"]) for k in pub if k not in mine})
    text = ["# Your run beside the published one", "",
            f"- Published: `{published}`: {machine([r for k in common for r in pub[k]])}",
            f"- Yours: `{yours}`: {machine([r for k in common for r in mine[k]])}", "",
            markdown_table(table.rename(columns=str.capitalize), align="llrrrrl"), "",
            "Accuracy: yours − published in points; time: yours ÷ published. Intervals: Welch's t 95 % over the "
            "per-run values (each run's median steady epoch, its first epoch, its accuracy). A time ratio compares "
            "the machines; an accuracy difference beyond noise says the same suite learned differently there."]
    if only:
        text += ["", f"Not in yours (not finished there): {', '.join(only)}."]
    notes = pub_found.lines() + mine_found.lines()
    if notes:
        text += ["", *[f"- {line}" for line in notes]]
    return "\n".join(text) + "\n", table
