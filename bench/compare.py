"""Regression check: one results folder against a baseline, configuration by configuration.

Runs match by their resolved configuration minus 'suite' and 'repeat', so the repeats of one
configuration form a group on each side. Per group and metric:

  time        steady seconds per epoch     per run: the median of its steady epochs   worse if higher
  throughput  steady images per second     per run: the median of its steady epochs   worse if lower
  accuracy    validation accuracy at the reported epochs, in points                   worse if lower

The rule (stats.py): runs are the independent units; the change is estimated from the per-run values
with Welch's t 95 % interval (ratio of geometric means for time and throughput, difference of means in
points for accuracy). A verdict is

  ok            the estimated change is within the threshold
  regressed     it is beyond the threshold AND the interval excludes no change
  inconclusive  it is beyond the threshold but the interval still includes no change (too few runs for
                the spread: the output says about how many runs per side would decide), or, for time and
                throughput, the two sides ran under different machine load (others' CPU share plus steal
                differing by more than LOAD_TOLERANCE), so a slowdown may be the neighbours'

Exit codes (cli): 0 ok, 1 a regression, 2 bad input or nothing compared, 3 inconclusive. A corrupt record
on either side is left out, named in the output, and makes it 2 unless a regression was found: a gate
must not pass on a comparison missing runs, nor hide a regression behind the damage.
Timings compare only on the same hardware (device, accelerator count, usable CPU cores).
Where a side's finished runs carry a diagnostic on a compared metric (diagnostics.py: noisy timing for time and
throughput, a run at chance for an accuracy), the row's Why says so: its verdict rests on that evidence.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import diagnostics, load, stats
from .config import NOT_MATCHED, match_key
from .environment import hardware_label
from .errors import SuiteErrors, UserError
from .matrix import AXES, OPTIONAL_AXES
from .overrides import matches, parse_match
from .store import Results, atomic_write, scan
from .suite_yaml import read
from .tables import left_out, markdown_table, pct, run_values, secs

DEFAULTS = {"time": 0.10, "throughput": 0.10, "accuracy": 2.0}
# Others' CPU share plus steal, as a fraction of the machine, that may differ between the sides before
# their timings stop being comparable. 10 % of a 2-core machine is a fifth of a core.
LOAD_TOLERANCE = 0.10
COLUMNS = ["config", "metric", "baseline", "current", "change", "interval", "threshold", "threshold_source",
           "verdict", "why", "baseline_median", "current_median", "baseline_runs", "current_runs"]
# What the user is testing when they change it: noted in the header, never refused.
SOFTWARE = [("Keras backend", ("keras_backend",)), ("Keras", ("versions", "keras")),
            ("TensorFlow", ("versions", "tensorflow")), ("JAX", ("versions", "jax")),
            ("PyTorch", ("versions", "torch")), ("NVIDIA driver", ("nvidia_driver",)),
            ("Python", ("python",)), ("git commit", ("git", "commit")), ("tlbench code", ("code_version",))]
HASHES = {"git commit", "tlbench code"}  # shortened in the header
VERDICTS = ("ok", "REGRESSED", "inconclusive")


@dataclass
class Report:
    text: str
    rows: pd.DataFrame
    regressions: list[str] = field(default_factory=list)  # one line per regressed configuration and metric
    inconclusive: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    damaged: bool = False  # a corrupt record was left out on either side: the comparison is not whole


# --- the thresholds: a suite's `regression:` block, the --*-threshold flags -------------------------

REGRESSION_METRICS = ("time", "throughput", "accuracy")


def threshold(metric: str, v) -> float:
    """A regression threshold, normalised: time/throughput as a fraction (0.10 or '10%'), accuracy in points.

    A bare time/throughput number of 1 or more is refused: '10' almost always means 10 %, not 1000 %.
    """
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {v!r}")
    text = str(v).strip()
    try:
        f = float(text[:-1]) / 100 if metric != "accuracy" and text.endswith("%") else float(text)
    except ValueError:
        f = None
    if metric == "accuracy":
        if f is None or not 0 < f <= 100:
            raise ValueError(f"expected accuracy points between 0 and 100 (2 = two points), got {v!r}")
        return f
    if f is None or not f > 0 or (not text.endswith("%") and f >= 1) or (metric == "throughput" and f >= 1):
        raise ValueError(f"expected a fraction such as 0.10 or a percentage such as 10%, got {v!r}")
    return f


def _thresholds(c, values: dict, path: tuple) -> dict:
    out = {}
    for k in REGRESSION_METRICS:
        if k in values:
            try:
                out[k] = threshold(k, values[k])
            except ValueError as e:
                c.error(path + (k,), str(e))
    return out


def regression_block(c, raw, axes: dict[str, list]) -> dict:
    """A suite's `regression:` thresholds, only what was given; errors go to the suite's checker `c`. `axes`: the
    names the matrix gives each of its AXES, which an override's `match` may name."""
    p = ("regression",)
    raw = c.mapping(raw, p, set(REGRESSION_METRICS) | {"overrides"})
    out = _thresholds(c, raw, p)
    rules = raw.get("overrides")
    if rules is None:
        return out
    if not isinstance(rules, list):
        c.error(p + ("overrides",), "expected a list of {match: {AXIS: names}, METRIC: threshold}")
        return out
    out["overrides"] = []
    for i, rule in enumerate(rules):
        rp = p + ("overrides", i)
        rule = c.mapping(rule, rp, set(REGRESSION_METRICS) | {"match"})
        match = parse_match(c, rp + ("match",), rule.get("match"), axes, "threshold")
        values = _thresholds(c, rule, rp)
        if not rule.get("match") or not any(k in rule for k in REGRESSION_METRICS):
            c.error(rp, f"needs 'match' and at least one of {', '.join(REGRESSION_METRICS)}")
        out["overrides"].append({"match": match or {}, **values})
    return out


def load_regression(path: str | Path) -> dict:
    """Only the `regression:` key of a suite (e.g. the copy in a results folder).

    The rest is not validated: a stored suite's relative dataset paths or data need not exist where
    results are compared.
    """
    data, c = read(Path(path))
    m = data.get("matrix") if isinstance(data.get("matrix"), dict) else {}
    axes = {a: m[a] if isinstance(m[a], list) else [m[a]] for a in AXES if a in m}
    out = {}
    if data.get("regression") is not None:
        out = regression_block(c, data["regression"], {a: axes.get(a, OPTIONAL_AXES.get(a, [])) for a in AXES})
    if c.errors:
        raise SuiteErrors(c.errors)
    return out


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
    """The hardware a side ran on: what timings depend on (device, accelerator count, usable cores)."""
    return "; ".join(sorted({hardware_label(r.get("environment") or {}) for r in records}))


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
    # a strategy's runs are matched by its own name, as the suite's overrides match them
    layers += [(f"suite override {i}", rule) for i, rule in enumerate(suite_reg.get("overrides", []))
               if matches(rule["match"], {**config, "mode": config.get("strategy") or config.get("mode")})]
    layers.append(("flag", flags))
    out = {}
    for source, values in layers:
        out.update({m: (v, source) for m, v in values.items() if m in DEFAULTS and v is not None})
    return out


def side_load(records: list[dict]) -> float | None:
    """The median share of the machine others took (steal included) while a side's runs ran."""
    values = [v for r in records if (v := load.interference(r.get("load"))) is not None]
    return float(np.median(values)) if values else None


def judge(metric: str, b: list[float], c: list[float], limit: float,
          loads: tuple[float | None, float | None] = (None, None)) -> tuple[stats.Interval, str, str]:
    """(interval, verdict, why) for one metric of one configuration: see the module docstring."""
    if metric == "accuracy":
        iv = stats.difference(b, c, scale=100)
        beyond, excludes_none = iv.estimate < -limit, iv.high < 0
        effect = iv.estimate
    else:
        iv = stats.ratio(b, c)
        if metric == "time":
            beyond, excludes_none = iv.estimate > 1 + limit, iv.low > 1
        else:
            beyond, excludes_none = iv.estimate < 1 - limit, iv.high < 1
        effect = math.log(iv.estimate)
    # Exactly at the threshold (up to float noise) passes.
    at = {"accuracy": -limit, "time": 1 + limit, "throughput": 1 - limit}[metric]
    if not beyond or round(iv.estimate, 9) == round(at, 9):
        return iv, "ok", "within the threshold"
    if metric != "accuracy" and None not in loads and abs(loads[0] - loads[1]) > LOAD_TOLERANCE:
        return iv, "inconclusive", (f"the sides ran under different load: other processes and steal took "
                                    f"{pct(loads[0])} of the machine during the baseline's runs, {pct(loads[1])} "
                                    "during the current's; re-run both on a quiet machine")
    if excludes_none:
        return iv, "REGRESSED", f"beyond the threshold, and the {stats.LEVEL:.0%} interval excludes no change"
    need = stats.runs_to_decide(effect, iv.spread)
    if iv.spread is None:
        advice = ("one run per side: run-to-run noise cannot be estimated; use repeats: 3 or more (on a noisy "
                  "shared VM about 9: benchmarks/results/gate_error_rates.json)")
    elif need is None:
        advice = "the spread is too wide to decide with any practical number of runs"
    else:
        advice = f"about {need} runs per side would decide, if the spread stays as measured"
    return iv, "inconclusive", f"beyond the threshold, but the interval includes no change ({advice})"


def _fmt(metric: str, v: list[float]) -> str:
    if not v:
        return "—"
    d = stats.describe(v)
    f = {"time": lambda x: f"{x:.3g} s" if x < 10 else secs(x), "throughput": lambda x: f"{x:.0f}",
         "accuracy": pct}[metric]
    unit = " img/s" if metric == "throughput" else ""
    spread = f" [{f(d['q1'])}–{f(d['q3'])}]" if d["n"] > 1 else ""
    return f"{f(d['median'])}{unit}{spread} ({d['n']} run{'s' if d['n'] > 1 else ''})"


def _change(metric: str, iv: stats.Interval) -> tuple[str, str]:
    if metric == "accuracy":
        return f"{iv.estimate:+.1f} pt", (f"{iv.low:+.1f} to {iv.high:+.1f} pt" if math.isfinite(iv.low) else "—")
    sign = lambda r: ("+" if r >= 1 else "") + pct(r - 1)  # noqa: E731
    return sign(iv.estimate), (f"{sign(iv.low)} to {sign(iv.high)}" if math.isfinite(iv.low) and
                               math.isfinite(iv.high) else "—")


def _label(cfg: dict) -> str:
    return f"{cfg.get('backbone')} · {cfg.get('dataset')} · {cfg.get('mode')}"


def config_labels(configs: dict[str, dict]) -> dict[str, str]:
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


def _flagged(cell: str, sides: dict[str, list[dict]]) -> str:
    """'baseline: noisy-timing in 2 of 3 runs': each side's diagnostics of its finished runs on one table cell
    (diagnostics.py's names: accuracy@N, seconds_per_epoch); '' when none."""
    said = []
    for side, runs in sides.items():
        names = [name for r in runs for name in dict.fromkeys(d.name for d in diagnostics.for_record(r)
                                                               if cell in d.affects)]
        said += [f"{side}: {name} in {names.count(name)} of {len(runs)} runs" for name in dict.fromkeys(names)]
    return "; ".join(said)


def _group(label: str, config: dict, b: list[dict], c: list[dict], limits: dict,
           epochs: list[int], loads: tuple) -> list[dict]:
    """Rows for one configuration present on both sides."""
    bok, cok = [r for r in b if r.get("status") == "ok"], [r for r in c if r.get("status") == "ok"]
    bv, cv = [run_values(r, epochs) for r in bok], [run_values(r, epochs) for r in cok]
    checks = [("time", "steady s/epoch", "steady_epoch_seconds", diagnostics.SECONDS),
              ("throughput", "steady img/s", "steady_images_per_second", diagnostics.SECONDS)]
    checks += [("accuracy", f"val acc @ epoch {n}", f"val_acc_{n}", diagnostics.accuracy_cell(n)) for n in epochs]
    rows = []
    for metric, name, col, cell in checks:
        bs = [v[col] for v in bv if not np.isnan(v[col])]
        cs = [v[col] for v in cv if not np.isnan(v[col])]
        limit, source = limits[metric]
        row = {"config": label, "metric": name, "baseline": _fmt(metric, bs), "current": _fmt(metric, cs),
               "threshold": {"time": f"+{pct(limit)}", "throughput": f"-{pct(limit)}"}.get(metric, f"-{limit:g} pt"),
               "threshold_source": source, "baseline_median": np.median(bs) if bs else np.nan,
               "current_median": np.median(cs) if cs else np.nan,
               "baseline_runs": " ".join(r["run_id"] for r in bok), "current_runs": " ".join(r["run_id"] for r in cok)}
        if not bs or not cs:
            if metric == "accuracy":
                continue  # this configuration has no such epoch; compare() refuses epochs no configuration has
            row.update(change="—", interval="—", verdict="inconclusive",
                       why="no finished run on one side (see the failed runs)")
        else:
            iv, verdict, why = judge(metric, bs, cs, limit, loads)
            change, interval = _change(metric, iv)
            row.update(change=change, interval=interval, verdict=verdict, why=why)
        if flags := _flagged(cell, {"baseline": bok, "current": cok}):
            row["why"] += f"; ⚠ {flags}: the verdict rests on those runs (tlbench diagnose)"
        rows.append(row)
    # A repeat that ran before and fails now is a regression too: CI must not pass on crashes.
    was = {r["config"].get("repeat"): r.get("status") for r in b}
    for run in c:
        if run.get("status") != "ok" and was.get(run["config"].get("repeat")) == "ok":
            rows.append({"config": label, "metric": "status", "baseline": "ok", "current": run.get("status"),
                         "change": run.get("status"),
                         "verdict": "REGRESSED", "why": f"failed now, ok in the baseline: {run.get('error')}",
                         "current_runs": run["run_id"]})
    return rows


def _unmatched(side: str, key: str, other: set[str], configs: dict, labels: dict, runs: dict) -> str:
    """A configuration on one side only; says how the nearest one on the other side differs."""
    near = [o for o in other if _label(configs[o]) == _label(configs[key])]
    why = ""
    if near:
        base, cur = (configs[key], configs[near[0]]) if side == "baseline" else (configs[near[0]], configs[key])
        why = "; nearest on the other side differs in " + ", ".join(
            f"{f}: baseline {base.get(f)!r}, current {cur.get(f)!r}" for f in _differences(base, cur))
    return f"only in {side}: {labels[key]} ({' '.join(r['run_id'] for r in runs[key])}){why}"


def by_config(records: list[dict]) -> dict[str, list[dict]]:
    """The records grouped by configuration (config.match_key): a configuration's repeats together."""
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(match_key(r), []).append(r)
    return out


def _readable(found: Results) -> list[dict]:
    if not found.records:
        why = (f"{len(found.corrupt)} corrupt record(s) left out: " + "; ".join(map(str, found.corrupt[:3]))
               if found.corrupt else "its runs/ folder is empty")
        raise UserError(f"'{found.folder}' holds no runs to compare ({why})")
    return found.records


def compare(baseline: Path, current: Path, flags: dict, epochs: list[int] | None = None,
            force: bool = False) -> Report:
    suite_file = Path(current) / "suite.yaml"
    try:
        suite_reg = load_regression(suite_file) if suite_file.exists() else {}
    except SuiteErrors as e:  # a verdict under the default thresholds instead would be a different gate
        raise UserError(f"{e}\ncompare takes the regression thresholds from that suite file: fix it, or move it "
                        "away to compare under the default thresholds and the --*-threshold flags") from None
    base_found, cur_found = scan(baseline), scan(current)
    noted = base_found.lines() + cur_found.lines()
    base_recs, cur_recs = _readable(base_found), _readable(cur_found)
    hw_b, hw_c = hardware(base_recs), hardware(cur_recs)
    if hw_b != hw_c and not force:
        raise UserError(f"different hardware: baseline '{baseline}' ran on {hw_b}, current "
                        f"'{current}' on {hw_c}. Timings compare only on the same device, accelerator count "
                        "and CPU core count; pass --force-different-hardware to compare anyway"
                        + "".join(f"\n  (also: {line})" for line in noted))

    b_runs, c_runs = by_config(base_recs), by_config(cur_recs)
    configs = {k: recs[0]["config"] for k, recs in {**b_runs, **c_runs}.items()}
    labels = config_labels(configs)
    matched = sorted(set(b_runs) & set(c_runs), key=labels.get)
    unmatched = [_unmatched("baseline", k, set(c_runs) - set(b_runs), configs, labels, b_runs)
                 for k in sorted(set(b_runs) - set(c_runs), key=labels.get)]
    unmatched += [_unmatched("current", k, set(b_runs) - set(c_runs), configs, labels, c_runs)
                  for k in sorted(set(c_runs) - set(b_runs), key=labels.get)]
    if not matched:
        raise UserError(f"nothing compared: no configuration of '{baseline}' ran in '{current}' (matched on the "
                        "whole resolved configuration, suite name and repeat aside).\n  " + "\n  ".join(unmatched))
    have = {e["epoch"] for k in matched for r in b_runs[k] + c_runs[k] for e in r.get("epochs", [])}
    if epochs:
        missing = sorted(set(epochs) - have)
        if missing:
            raise UserError(f"--epochs: no run on both sides has epoch {', '.join(map(str, missing))} "
                            f"(the compared runs have epochs {min(have, default=0)}–{max(have, default=0)})")
    loads = (side_load(base_recs), side_load(cur_recs))

    rows = []
    for key in matched:
        cfg = configs[key]
        wanted = epochs or sorted({1, int(cfg.get("epochs", 1))})
        rows += _group(labels[key], cfg, b_runs[key], c_runs[key], resolve_thresholds(cfg, suite_reg, flags),
                       wanted, loads)
    failed = [f"{side}: {r['run_id']}: {r.get('status')}: {r.get('error')}"
              for side, recs in (("baseline", base_recs), ("current", cur_recs)) for r in recs
              if r.get("status") != "ok"]
    table = pd.DataFrame(rows, columns=COLUMNS)
    lines = {v: [f"{r['config']}: {r['metric']} {r.get('change') or ''} ({r['why']}); runs: {r['current_runs']}"
                 for r in rows if r["verdict"] == v] for v in ("REGRESSED", "inconclusive")}
    text = _markdown(baseline, current, base_recs, cur_recs, hw_b, hw_c, table, lines, unmatched, failed, loads)
    if noted:
        text += "\n" + left_out(noted)
    warnings = [f"warning: DIFFERENT HARDWARE (forced): baseline {hw_b}, current {hw_c}"] if hw_b != hw_c else []
    return Report(text, table, lines["REGRESSED"], lines["inconclusive"],
                  warnings + [f"warning: {line}" for line in noted] + [f"unmatched: {u}" for u in unmatched],
                  damaged=bool(base_found.corrupt or cur_found.corrupt))


def _load_line(loads: tuple) -> str:
    if None in loads:
        return "Machine load: not recorded on " + " and ".join(
            s for s, v in zip(("baseline", "current"), loads) if v is None) + " (records from before tlbench kept it)"
    same = abs(loads[0] - loads[1]) <= LOAD_TOLERANCE
    return (f"Machine load (others' CPU share plus steal, median over runs): baseline {pct(loads[0])}, current "
            f"{pct(loads[1])} — " + ("comparable" if same else
                                      f"**different** (more than {pct(LOAD_TOLERANCE)} apart): timing changes "
                                      "cannot be told from the neighbours' and are inconclusive"))


def _markdown(baseline, current, base_recs, cur_recs, hw_b, hw_c, table, lines, unmatched, failed, loads) -> str:
    out = ["# Regression check", "",
           f"Baseline: `{baseline}` ({len(base_recs)} runs) · Current: `{current}` ({len(cur_recs)} runs)", ""]
    if hw_b != hw_c:
        out += [f"> **⚠ DIFFERENT HARDWARE — compared only because of --force-different-hardware.** Baseline ran "
                f"on {hw_b}, current on {hw_c}: time and throughput changes measure the hardware, not the "
                "software.", ""]
    else:
        out += [f"Hardware: {hw_c} (same on both sides)", ""]
    notes = software_notes(base_recs, cur_recs)
    out += [f"Software changed (what this comparison tests): {'; '.join(notes)}" if notes
            else "Software: same backend, versions and commit on both sides", "", _load_line(loads), ""]
    header = {"config": "Configuration", "metric": "Metric", "baseline": "Baseline", "current": "Current",
              "change": "Change", "interval": "95% interval", "threshold": "Threshold", "verdict": "Verdict",
              "why": "Why"}
    out += [markdown_table(table[list(header)].rename(columns=header), "llrrrrrll")]
    regressed, unsure = lines["REGRESSED"], lines["inconclusive"]
    out += ["", f"**Regressed: {len(regressed)}**" if regressed else
            (f"**Inconclusive: {len(unsure)}** (no regression shown, none ruled out)" if unsure
             else "**No regressions.**")]
    out += ["", "Rule: runs are the independent units (each run's value is the median of its steady epochs, or its "
            "accuracy at the epoch). A change beyond its threshold is a regression only if Welch's t 95 % interval "
            "over the per-run values (a ratio for times and throughputs, points for accuracy) excludes no change, "
            "and, for timings, both sides ran under comparable load; otherwise it is inconclusive. Cells: median "
            "[interquartile range] over runs."]
    if unmatched:
        out += ["", "### Unmatched configurations (not compared)", *[f"- {u}" for u in unmatched]]
    if failed:
        out += ["", "### Failed runs", *[f"- {f}" for f in failed]]
    return "\n".join(out) + "\n"


def write(report: Report, out: Path) -> list[Path]:
    paths = [Path(out) / "compare.md", Path(out) / "compare.csv"]
    atomic_write(paths[0], report.text)
    atomic_write(paths[1], report.rows.to_csv(index=False))
    return paths
