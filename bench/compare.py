"""Regression check: one results folder against a baseline, configuration by configuration.

Runs match by their resolved configuration minus 'suite' and 'repeat', so the repeats of one
configuration form a group on each side. Per group and metric the medians over repeats are compared:

  time        steady-state seconds per epoch (per run: median of its steady epochs)   worse if higher
  throughput  steady-state images/second (per run: images / seconds, summed)          worse if lower
  accuracy    validation accuracy at the reported epochs, in points                    worse if lower

A change beyond its threshold regresses only if the spread agrees: with repeats on both sides,
current's best repeat must be worse than baseline's worst (the ranges do not overlap). A single run
on a side has no spread, so there the threshold alone decides; the output names the rule used.
Timings compare only on the same accelerator model: anything else is refused unless forced.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .config import NOT_MATCHED, match_key
from .errors import UserError
from .store import atomic_write, read_runs
from .suite import load_regression, threshold
from .tables import pct, per_run, secs

DEFAULTS = {"time": 0.10, "throughput": 0.10, "accuracy": 2.0}
COLUMNS = ["config", "metric", "baseline", "current", "change", "threshold", "threshold_source", "verdict", "rule",
           "baseline_median", "current_median", "current_runs"]
# What the user is testing when they change it: noted in the header, never refused.
SOFTWARE = [("Keras backend", ("keras_backend",)), ("Keras", ("versions", "keras")),
            ("TensorFlow", ("versions", "tensorflow")), ("JAX", ("versions", "jax")),
            ("PyTorch", ("versions", "torch")), ("NVIDIA driver", ("nvidia_driver",)),
            ("Python", ("python",)), ("git commit", ("git", "commit")), ("tlbench code", ("code_version",))]
HASHES = {"git commit", "tlbench code"}  # shortened in the header


@dataclass
class Report:
    text: str
    rows: pd.DataFrame
    regressions: list[str] = field(default_factory=list)  # one line per regressed run group and metric
    warnings: list[str] = field(default_factory=list)


def parse_flags(**given: str | None) -> dict:
    """Command-line thresholds, read like the suite's `regression:` values ('10%' or 0.10; points)."""
    out = {}
    for metric, text in given.items():
        try:
            out[metric] = None if text is None else threshold(metric, text)
        except ValueError as e:
            raise UserError(f"--{metric}-threshold: {e}") from None
    return out


def _env(rec: dict, path: tuple):
    v = rec.get("environment", {})
    for p in path:
        v = v.get(p) if isinstance(v, dict) else None
    return v


def _values(records, path) -> str:
    return ", ".join(sorted({str(_env(r, path)) for r in records}))


def hardware(records: list[dict]) -> str:
    """The accelerator model and count a side ran on: the part of the environment timings depend on."""
    def one(rec):
        n = _env(rec, ("accelerator_count",)) or 0
        return str(_env(rec, ("device",))) + (f" ×{n}" if n > 1 else "")

    return "; ".join(sorted({one(r) for r in records}))


def software_notes(base: list[dict], cur: list[dict]) -> list[str]:
    notes = []
    for label, path in SOFTWARE:
        b, c = _values(base, path), _values(cur, path)
        if b != c:
            short = (lambda s: ", ".join(x[:10] for x in s.split(", "))) if label in HASHES else str
            notes.append(f"{label} {short(b)} → {short(c)}")
    return notes


def resolve_thresholds(config: dict, suite_reg: dict, flags: dict) -> dict[str, tuple[float, str]]:
    """metric -> (threshold, where it came from): defaults < suite < matching suite overrides < flags."""
    layers = [("default", DEFAULTS), ("suite", suite_reg)]
    layers += [(f"suite override {i}", rule) for i, rule in enumerate(suite_reg.get("overrides", []))
               if all(config.get(axis) in names for axis, names in rule["match"].items())]
    layers.append(("flag", flags))
    out = {}
    for source, values in layers:
        out.update({m: (v, source) for m, v in values.items() if m in DEFAULTS and v is not None})
    return out


def judge(metric: str, b: pd.Series, c: pd.Series, limit: float) -> tuple[float, str, str]:
    """(change, verdict, rule): change is a ratio-1 for time/throughput, points for accuracy."""
    if metric == "accuracy":
        change = 100 * (c.median() - b.median())
        worse, beyond = change < -limit, c.max() < b.min()
    elif metric == "time":
        change = c.median() / b.median() - 1
        worse, beyond = change > limit, c.min() > b.max()
    else:
        change = c.median() / b.median() - 1
        worse, beyond = change < -limit, c.max() < b.min()
    if not worse or round(change, 9) == round(-limit if metric != "time" else limit, 9):
        return change, "ok", "within threshold"  # exactly at the threshold (up to float noise) passes
    if len(b) < 2 or len(c) < 2:
        return change, "REGRESSED", "threshold (a single run on one side: no spread to check)"
    if beyond:
        return change, "REGRESSED", "threshold + spread (current's best repeat is worse than baseline's worst)"
    return change, "noise", "threshold exceeded, but within the spread (the repeats' ranges overlap)"


def _fmt(metric: str, v: pd.Series) -> str:
    if v.empty:
        return "—"
    # tables.secs rounds to 0.1 s; sub-10 s epochs (small suites, fast accelerators) need more digits here.
    f = {"time": lambda x: f"{x:.3g} s" if x < 10 else secs(x), "throughput": lambda x: f"{x:.0f}",
         "accuracy": pct}[metric]
    unit = " img/s" if metric == "throughput" else ""
    return f(v.median()) + unit + (f" ({f(v.min())}–{f(v.max())}, {len(v)} runs)" if len(v) > 1 else "")


def _label(cfg: dict) -> str:
    return f"{cfg.get('backbone')} · {cfg.get('dataset')} · {cfg.get('mode')}"


def _labels(configs: dict[str, dict]) -> dict[str, str]:
    """Short names; where two configurations share one, add the settings that tell them apart."""
    by_label: dict[str, list[str]] = {}
    for k, cfg in configs.items():
        by_label.setdefault(_label(cfg), []).append(k)
    out = {}
    for label, keys in by_label.items():
        for k in keys:
            differ = sorted({f for o in keys for f in _differences(configs[k], configs[o])})
            out[k] = label + "".join(f" · {f}={configs[k].get(f)}" for f in differ)
    return out


def _differences(a: dict, b: dict) -> list[str]:
    return [k for k in sorted(set(a) | set(b)) if k not in NOT_MATCHED and a.get(k) != b.get(k)]


def _side(records: list[dict], epochs: list[int]) -> pd.DataFrame:
    runs = per_run(records, epochs)
    if runs.empty:
        return runs
    keys = {r["run_id"]: match_key(r) for r in records}
    errors = {r["run_id"]: r.get("error") for r in records}
    return runs.assign(key=runs.run_id.map(keys), error=runs.run_id.map(errors))


def _group(label: str, config: dict, b: pd.DataFrame, c: pd.DataFrame, limits: dict,
           epochs: list[int] | None) -> tuple[list[dict], list[str]]:
    """Rows and regression lines for one configuration present on both sides."""
    bok, cok = b[b.status == "ok"], c[c.status == "ok"]
    checks = [("time", "steady s/epoch", "steady_epoch_seconds"),
              ("throughput", "steady img/s", "steady_images_per_second")]
    checks += [("accuracy", f"val acc @ epoch {n}", f"val_acc_{n}")
               for n in epochs or sorted({1, int(config.get("epochs", 1))})]
    rows, regressions = [], []
    for metric, name, col in checks:
        bv = pd.to_numeric(bok[col], errors="coerce").dropna()
        cv = pd.to_numeric(cok[col], errors="coerce").dropna()
        limit, source = limits[metric]
        row = {"config": label, "metric": name, "baseline": _fmt(metric, bv), "current": _fmt(metric, cv),
               "threshold": {"time": f"+{pct(limit)}", "throughput": f"-{pct(limit)}"}.get(metric, f"-{limit:g} pt"),
               "threshold_source": source, "baseline_median": bv.median() if len(bv) else np.nan,
               "current_median": cv.median() if len(cv) else np.nan, "current_runs": " ".join(cok.run_id)}
        if bv.empty or cv.empty:
            row.update(change="—", verdict="n/a", rule="no value on one side (failed runs or no such epoch)")
        else:
            change, verdict, rule = judge(metric, bv, cv, limit)
            text = f"{change:+.1f} pt" if metric == "accuracy" else ("+" if change >= 0 else "") + pct(change)
            row.update(change=text, verdict=verdict, rule=rule)
            if verdict == "REGRESSED":
                regressions.append(f"{label}: {name} {text} (threshold {row['threshold']}; {rule}); "
                                   f"runs: {', '.join(cok.run_id)}")
        rows.append(row)
    # A repeat that ran before and fails now is a regression too: CI must not pass on crashes.
    was = dict(zip(b["repeat"], b.status))
    for _, run in c[c.status != "ok"].iterrows():
        if was.get(run["repeat"]) == "ok":  # run.repeat would be Series.repeat, a method
            regressions.append(f"{label}: status {run.status} (baseline ok); run: {run.run_id}: {run.error}")
            rows.append({"config": label, "metric": "status", "baseline": "ok", "current": run.status,
                         "verdict": "REGRESSED", "rule": "failed now, ok in the baseline", "current_runs": run.run_id})
    return rows, regressions


def _unmatched(side: str, key: str, other: set[str], configs: dict, labels: dict, runs: pd.DataFrame) -> dict:
    """A configuration on one side only; says how the nearest one on the other side differs."""
    near = [o for o in other if _label(configs[o]) == _label(configs[key])]
    why = ""
    if near:
        base, cur = (configs[key], configs[near[0]]) if side == "baseline" else (configs[near[0]], configs[key])
        why = "nearest on the other side differs in " + ", ".join(
            f"{f}: baseline {base.get(f)!r}, current {cur.get(f)!r}" for f in _differences(base, cur))
    ids = " ".join(runs[runs.key == key].run_id)
    return {"config": labels[key], "metric": "status", "verdict": f"unmatched: {side} only", "rule": why,
            "current_runs": ids if side == "current" else "",
            "line": f"only in {side}: {labels[key]} ({ids}){'; ' + why if why else ''}"}


def compare(baseline: Path, current: Path, flags: dict, epochs: list[int] | None = None,
            force: bool = False) -> Report:
    base_recs, cur_recs = read_runs(baseline), read_runs(current)
    for folder, recs in ((baseline, base_recs), (current, cur_recs)):
        if not recs:
            raise UserError(f"'{folder}' holds no runs (its runs/ folder is empty)")
    hw_b, hw_c = hardware(base_recs), hardware(cur_recs)
    if hw_b != hw_c and not force:
        raise UserError(f"different hardware: baseline '{baseline}' ran on {hw_b}, current "
                        f"'{current}' on {hw_c}. Timings compare only on the same accelerator "
                        "model; pass --force-different-hardware to compare anyway")
    suite_file = Path(current) / "suite.yaml"
    suite_reg = load_regression(suite_file) if suite_file.is_file() else {}

    configs = {match_key(r): r["config"] for r in base_recs + cur_recs}
    labels = _labels(configs)
    # Default epochs: 1 and each configuration's last (configurations differ in length).
    wanted = sorted(set(epochs) if epochs else {1} | {int(c.get("epochs", 1)) for c in configs.values()})
    b_runs, c_runs = _side(base_recs, wanted), _side(cur_recs, wanted)
    b_keys = set(b_runs.key) if len(b_runs) else set()
    c_keys = set(c_runs.key) if len(c_runs) else set()

    rows, regressions = [], []
    for key in sorted(b_keys & c_keys, key=labels.get):
        r, reg = _group(labels[key], configs[key], b_runs[b_runs.key == key], c_runs[c_runs.key == key],
                        resolve_thresholds(configs[key], suite_reg, flags), epochs)
        rows += r
        regressions += reg
    unmatched = [_unmatched("baseline", k, c_keys - b_keys, configs, labels, b_runs)
                 for k in sorted(b_keys - c_keys, key=labels.get)]
    unmatched += [_unmatched("current", k, b_keys - c_keys, configs, labels, c_runs)
                  for k in sorted(c_keys - b_keys, key=labels.get)]
    failed = [f"{side}: {run.run_id}: {run.status}: {run.error}"
              for side, runs in (("baseline", b_runs), ("current", c_runs)) if len(runs)
              for _, run in runs[runs.status != "ok"].iterrows()]

    table = pd.DataFrame(rows + unmatched, columns=COLUMNS)
    lines = [u["line"] for u in unmatched]
    text = _markdown(baseline, current, base_recs, cur_recs, hw_b, hw_c, table, regressions, lines, failed)
    warnings = [f"warning: DIFFERENT HARDWARE (forced): baseline {hw_b}, current {hw_c}"] if hw_b != hw_c else []
    return Report(text, table, regressions, warnings + [f"unmatched: {u}" for u in lines])


def _markdown(baseline, current, base_recs, cur_recs, hw_b, hw_c, table, regressions, unmatched, failed) -> str:
    lines = ["# Regression check", "",
             f"Baseline: `{baseline}` ({len(base_recs)} runs) · Current: `{current}` ({len(cur_recs)} runs)", ""]
    if hw_b != hw_c:
        lines += [f"> **⚠ DIFFERENT HARDWARE — compared only because of --force-different-hardware.** Baseline ran "
                  f"on {hw_b}, current on {hw_c}: time and throughput changes measure the hardware, not the "
                  "software.", ""]
    else:
        lines += [f"Hardware: {hw_c} (same on both sides)", ""]
    notes = software_notes(base_recs, cur_recs)
    lines += [f"Software changed (what this comparison tests): {'; '.join(notes)}" if notes
              else "Software: same backend, versions and commit on both sides", ""]
    cols = COLUMNS[:9]
    compared = table[table.verdict.isin(["ok", "REGRESSED", "noise", "n/a"])] if len(table) else table
    if len(compared):
        lines += ["| Configuration | Metric | Baseline | Current | Change | Threshold | From | Verdict | Rule |",
                  "|---|---|---:|---:|---:|---:|---|---|---|"]
        lines += ["| " + " | ".join(str(r.get(c, "")) if pd.notna(r.get(c, "")) else "" for c in cols) + " |"
                  for _, r in compared.iterrows()]
    else:
        lines.append("_no configuration ran on both sides_")
    lines += ["", f"**Regressed: {len(regressions)}**" if regressions else "**No regressions.**"]
    lines += [f"- {r}" for r in regressions]
    lines += ["", "Rules: a change regresses when it is beyond its threshold and, with repeats on both sides, "
              "current's best repeat is worse than baseline's worst; 'noise' = beyond the threshold but within "
              "the spread (not counted). Values: median over repeats (min–max)."]
    if unmatched:
        lines += ["", "### Unmatched configurations (not compared)", *[f"- {u}" for u in unmatched]]
    if failed:
        lines += ["", "### Failed runs", *[f"- {f}" for f in failed]]
    return "\n".join(lines) + "\n"


def write(report: Report, out: Path) -> list[Path]:
    paths = [Path(out) / "compare.md", Path(out) / "compare.csv"]
    atomic_write(paths[0], report.text)
    atomic_write(paths[1], report.rows.to_csv(index=False))
    return paths
