"""A training-set size study: which transfer-learning strategy wins at which amount of data, and at what cost.

A study is a block of the comparison table (one backbone x dataset x input size x weights x backend x
precision, on one hardware) whose runs sweep `train_size` (at least two sizes) for at least two strategies.
A strategy is one configuration less its training-set size, so configurations never pool; its name is the
suite's `strategy` (or the mode), and its category says what it trains (CATEGORIES).

Per strategy and size: the final-epoch validation accuracy (one sample per run) and the training cost of
one run (the sum of its epochs, plus the feature extraction of a cached-features run). From these:

  RESULTS/study.md, study.csv   per size: the best strategy, its margin over the runner-up, its cost
  RESULTS/figures/study_accuracy_vs_size.{png,svg}, study_accuracy_vs_time.{png,svg}

and the crossover sizes: where fine-tuning overtakes the frozen head, where scratch catches up with the
best pretrained strategy; then the four cases Udacity's lesson teaches (references/cases/four-cases.yaml) beside it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

from . import plots, tables
from .config import complete
from .modes import MODES
from .stats import Interval, describe, difference
from .store import atomic_write

CASES = Path(__file__).resolve().parent / "references" / "cases" / "four-cases.yaml"
FROZEN_HEAD, CUT_HEAD, PARTIAL, FULL, SCRATCH = (
    "frozen head", "cut + head", "partial fine-tuning", "full fine-tuning", "scratch")
CATEGORIES = (FROZEN_HEAD, CUT_HEAD, PARTIAL, FULL, SCRATCH)
PRETRAINED = (FROZEN_HEAD, CUT_HEAD, PARTIAL, FULL)
FIGURES = {"study_accuracy_vs_size": "Final validation accuracy by training-set size",
           "study_accuracy_vs_time": "Final validation accuracy by training cost"}
NOTE = ("Accuracy: validation accuracy after the last epoch, one sample per run: median [interquartile range] n. "
        "Margin: the best strategy's median minus the runner-up's, in points, with the 95 % interval of the "
        "difference (Welch, over runs; bench.stats.difference) when both have at least 2 runs; 'within noise' "
        "when that interval includes 0. Cost: wall seconds of one run's training, the sum of its epochs "
        "(training plus validation), median over runs; for cached-features runs it includes the one-time "
        "feature extraction (`features.extract_seconds`, the original extraction's time even where a later run "
        "found the features cached), since that is what the strategy costs on its own. Relative cost: against "
        "the most accurate frozen head at the same size.")


def category(config: dict) -> str:
    """What a configuration trains: the lesson's vocabulary, from mode, cut and unfreeze."""
    mode = MODES.get(config["mode"])
    if not mode.pretrained:
        return SCRATCH
    unfreeze = config.get("unfreeze")
    trains_backbone = mode.trainable if unfreeze is None else unfreeze != "none"
    if not trains_backbone:
        return CUT_HEAD if config.get("cut") else FROZEN_HEAD
    return FULL if unfreeze in (None, "all") else PARTIAL


def _detail(config: dict) -> str:
    """The settings behind a strategy's category, for the list under the table."""
    parts = [f"mode {config['mode']}"]
    parts += [f"{k} {config[k]}" for k in ("cut", "unfreeze", "batchnorm", "recipe") if config.get(k)]
    return ", ".join(parts)


@dataclass
class Line:
    """One strategy of a study across its sizes: the per-run values of its finished runs."""

    name: str
    category: str
    detail: str
    acc: dict[int, list[float]] = field(default_factory=dict)
    cost: dict[int, list[float]] = field(default_factory=dict)
    failed: dict[int, int] = field(default_factory=dict)

    def median(self, size: int, what: str = "acc") -> float:
        return describe(getattr(self, what).get(size, []))["median"]


@dataclass
class Study:
    title: str
    hardware: str
    dataset: str  # the dataset's type (cifar10, fashion_mnist, ...), what similarity is judged on
    sizes: list[int]
    lines: list[Line]
    records: list[dict]
    protocol: dict[str, dict[int, str]] = field(default_factory=dict)  # settings that follow the size (_by_size)


def _size(record: dict, config: dict) -> int | None:
    """The training-set size; a run on the whole training set reads it from its first epoch."""
    if config.get("train_size"):
        return int(config["train_size"])
    epochs = record.get("epochs") or [{}]
    return epochs[0].get("train_images")


def _run_values(record: dict) -> tuple[float, float]:
    """(final-epoch validation accuracy, training seconds including any feature extraction) of one run."""
    epochs = record["epochs"]
    last = max(epochs, key=lambda e: e["epoch"])
    extract = (record.get("features") or {}).get("extract_seconds") or 0.0
    return last["val_accuracy"], sum(e["epoch_seconds"] for e in epochs) + extract


def _names(configs: dict[str, dict]) -> dict[str, str]:
    """line key -> name: the kind, with the settings that tell apart two lines of the same kind."""
    out = {}
    for key, cfg in configs.items():
        same = [c for c in configs.values() if tables.kind(c) == tables.kind(cfg)]
        differ = sorted(k for k in cfg if len({json.dumps(c.get(k), sort_keys=True, default=str) for c in same}) > 1)
        out[key] = tables.kind(cfg) + (f" ({', '.join(f'{k}={cfg[k]}' for k in differ)})" if differ else "")
    return out


def _blocks(records: list[dict]) -> list[list[dict]]:
    """The records by block of the comparison table, on one hardware: what may be set side by side."""
    blocks: dict[tuple, list[dict]] = {}
    for rec in records:
        fields = tables.identity_fields(rec)
        blocks.setdefault(tuple(fields[k] for k in tables.BLOCK_KEYS + ["hardware"]), []).append(rec)
    return list(blocks.values())


def _line(name: str, config: dict, runs: list[tuple[int, dict]]) -> Line:
    line = Line(name, category(config), _detail(config))
    for size, rec in runs:
        if rec.get("status") != "ok":
            line.failed[size] = line.failed.get(size, 0) + 1
            continue
        acc, cost = _run_values(rec)
        line.acc.setdefault(size, []).append(acc)
        line.cost.setdefault(size, []).append(cost)
    return line


def _by_size(sized: list[tuple[int, dict]]) -> dict[str, dict[int, str]]:
    """Settings that follow the training-set size across the whole block (a suite's `match: {train_size: 250},
    set: {epochs: 20}`): field -> {size: value}. They belong to the size, not to a strategy."""
    seen: dict[str, dict[int, set]] = {}
    for size, fields in sized:
        for k, v in fields.items():
            seen.setdefault(k, {}).setdefault(size, set()).add(v)
    return {k: {s: v.pop() for s, v in per.items()} for k, per in seen.items()
            if k != "train_size" and all(len(v) == 1 for v in per.values()) and len(set().union(*per.values())) > 1}


def _study(records: list[dict]) -> Study | None:
    """The block's study, or None when it does not sweep at least two sizes for at least two strategies."""
    sized = [(size, tables.identity_fields(rec), rec) for rec in records
             if (size := _size(rec, complete(rec["config"]))) is not None]
    protocol = _by_size([(size, fields) for size, fields, _ in sized])
    runs: dict[str, list[tuple[int, dict]]] = {}  # a strategy: the whole configuration but its size
    configs = {}
    for size, fields, rec in sized:
        key = json.dumps({k: v for k, v in fields.items() if k != "train_size" and k not in protocol}, sort_keys=True)
        runs.setdefault(key, []).append((size, rec))
        configs[key] = {k: v for k, v in complete(rec["config"]).items()
                        if k not in ("suite", "repeat", "train_size", *protocol)}
    sizes = sorted({s for pairs in runs.values() for s, _ in pairs})
    if len(sizes) < 2 or len(runs) < 2:
        return None
    names = _names(configs)
    lines = sorted((_line(names[k], configs[k], pairs) for k, pairs in runs.items()),
                   key=lambda ln: (CATEGORIES.index(ln.category), ln.name))
    cfg = complete(records[0]["config"])
    return Study(tables.block_title(cfg), tables.identity_fields(records[0])["hardware"],
                 (cfg.get("dataset_params") or {}).get("type") or cfg["dataset"], sizes, lines, records, protocol)


def find(records: list[dict]) -> list[Study]:
    """The training-set size studies in a folder's records, one per block that holds one."""
    return [s for block in _blocks(records) if (s := _study(block))]


# --- comparisons ---------------------------------------------------------------------------------

def best(study: Study, size: int, categories=CATEGORIES, exclude: Line | None = None) -> Line | None:
    """The most accurate line (by median) of these categories at this size, or None if none was measured."""
    found = [ln for ln in study.lines if ln.category in categories and ln.acc.get(size) and ln is not exclude]
    return max(found, key=lambda ln: ln.median(size), default=None)


def versus(base: list[float], other: list[float]) -> tuple[Interval | None, str]:
    """other - base in points with its 95 % interval, and what it says; no interval below 2 runs a side."""
    if min(len(base), len(other)) < 2:
        return None, "n=1, no interval"
    iv = difference(base, other, scale=100)
    word = "beyond noise" if beyond(iv) else "within noise"
    return iv, f"{word}, 95 % interval {iv.low:+.1f} to {iv.high:+.1f} pts"


def beyond(iv: Interval | None) -> bool:
    return iv is not None and (iv.low > 0 or iv.high < 0)


@dataclass
class Crossover:
    """Where the challenger's median accuracy minus the incumbent's changes sign, on log size."""

    challenger: str
    incumbent: str
    points: list[tuple[int, Line, Line, float]]  # (size, challenger's best, incumbent's best, difference in points)
    at: float | None = None  # the interpolated size of the first sign change
    pair: tuple[int, int] | None = None  # indices into points either side of it

    @property
    def decided(self) -> bool:
        """Whether the difference on either side of the crossing is beyond noise (else the crossing may be noise)."""
        return any(beyond(versus(i.acc[size], c.acc[size])[0]) for size, c, i, _ in
                   (self.points[k] for k in self.pair))

    @property
    def verb(self) -> str:
        return "overtakes" if self.points[self.pair[0]][3] < 0 else "falls behind"


def crossover(study: Study, challenger: tuple, incumbent: tuple, names: tuple[str, str]) -> Crossover:
    points = []
    for size in study.sizes:
        c, i = best(study, size, challenger), best(study, size, incumbent)
        if c and i:
            points.append((size, c, i, 100 * (c.median(size) - i.median(size))))
    out = Crossover(*names, points)
    for k in range(len(points) - 1):
        (s0, *_, d0), (s1, *_, d1) = points[k], points[k + 1]
        if (d0 < 0) != (d1 < 0):  # a tie counts as caught up
            t = d0 / (d0 - d1)
            out.at = math.exp(math.log(s0) + t * (math.log(s1) - math.log(s0)))
            out.pair = (k, k + 1)
            break
    return out


def crossovers(study: Study) -> list[Crossover]:
    return [crossover(study, (PARTIAL, FULL), (FROZEN_HEAD,), ("Fine-tuning (the better of partial and full)",
                                                               "the frozen head")),
            crossover(study, (SCRATCH,), PRETRAINED, ("Scratch", "the best pretrained strategy"))]


def _at(point) -> str:
    size, c, i, d = point
    return f"{d:+.1f} pts at {size:,} ({versus(i.acc[size], c.acc[size])[1]})"


def sentence(x: Crossover) -> str:
    """The crossover in words, with the differences at the sizes either side and whether they are noise."""
    if len(x.points) < 2:
        return f"{x.challenger} against {x.incumbent}: not measured at two common sizes."
    if x.at is not None:
        before, after = x.points[x.pair[0]], x.points[x.pair[1]]
        return (f"{x.challenger} {x.verb} {x.incumbent} at about {x.at:,.0f} training images (interpolated on log "
                f"size): {_at(before)}; {_at(after)}.")
    first, last = x.points[0], x.points[-1]
    if last[3] >= 0:
        return (f"{x.challenger} beats {x.incumbent} at every size measured: {_at(first)}; {_at(last)}.")
    return (f"{x.challenger} stays {-last[3]:.1f} points behind {x.incumbent} at the largest size measured "
            f"({last[2].name}); it never crosses in range: {_at(first)}; {_at(last)}.")


# --- the table ------------------------------------------------------------------------------------

def per_size(study: Study) -> list[dict]:
    """Per training-set size: the best strategy, its margin over the runner-up and its cost, as numbers."""
    rows = []
    for size in study.sizes:
        top = best(study, size)
        if top is None:
            continue
        second = best(study, size, exclude=top)
        head = best(study, size, (FROZEN_HEAD,))
        acc = describe(top.acc[size])
        iv, noise = versus(second.acc[size], top.acc[size]) if second else (None, "")
        rows.append({"block": study.title, "hardware": study.hardware, "train_size": size, "best": top.name,
                     "best_category": top.category, "best_line": top, "runner_up_line": second,
                     **{f"val_acc_{k}": acc[k] for k in ("median", "q1", "q3", "n")},
                     "margin_points": 100 * (top.median(size) - second.median(size)) if second else np.nan,
                     "margin_low": iv.low if iv else np.nan, "margin_high": iv.high if iv else np.nan,
                     "margin_noise": ("n=1" if second and not iv else "beyond noise" if beyond(iv)
                                      else "within noise" if iv else ""),
                     "runner_up": second.name if second else "",
                     "cost_seconds": top.median(size, "cost"), "frozen_head": head.name if head else "",
                     "cost_vs_frozen_head": top.median(size, "cost") / head.median(size, "cost") if head else np.nan})
    return rows


def _margin(row: dict) -> str:
    if not row["runner_up"]:
        return "—"
    text = f"{row['margin_points']:+.1f} pts"
    if row["margin_noise"] == "n=1":
        return text + " (n=1)"
    text += f" [{row['margin_low']:+.1f} to {row['margin_high']:+.1f}]"
    return text + (", within noise" if row["margin_noise"] == "within noise" else "")


def _times(r: float) -> str:
    return f"{r:.0f}×" if r >= 10 else f"{r:#.2g}×"  # two significant digits, as the report's ratios


def _acc_cell(line: Line, size: int) -> str:
    """tables.cell's 'median [IQR] n=…' for one line at one size, failed runs named."""
    d = describe(line.acc.get(size, []))
    failed = line.failed.get(size, 0)
    row = {**{f"acc_{k}": v for k, v in d.items()}, "ok": d["n"], "runs": d["n"] + failed,
           "status": "failed" if failed else "ok"}
    return tables.cell(row, "acc", tables.pct)


def table(study: Study) -> str:
    header = ["Training images", "Best strategy", "Final val acc (median [IQR] n)",
              "Margin over runner-up (points, 95 % interval)", "Runner-up", "Cost of best (s per run)",
              "Cost relative to frozen head (×)"]
    rows = [[f"{row['train_size']:,}", row["best"], _acc_cell(row["best_line"], row["train_size"]), _margin(row),
             row["runner_up"] or "—", tables.secs(row["cost_seconds"]),
             "—" if pd.isna(row["cost_vs_frozen_head"]) else _times(row["cost_vs_frozen_head"])]
            for row in per_size(study)]
    return tables.markdown_table(pd.DataFrame(rows, columns=header), "rlcclrr")


def matrix(study: Study) -> str:
    """Every strategy at every size: accuracy and cost, so the per-size winners can be checked."""
    rows = [[ln.name, ln.category] + [f"{_acc_cell(ln, s)} · {tables.secs(ln.median(s, 'cost'))}" if ln.acc.get(s)
                                      else ("failed" if ln.failed.get(s) else "—") for s in study.sizes]
            for ln in study.lines]
    header = ["Strategy", "Category"] + [f"{s:,} images" for s in study.sizes]
    return tables.markdown_table(pd.DataFrame(rows, columns=header), "ll" + "c" * len(study.sizes))


def csv(studies: list[Study]) -> str:
    rows = [{k: v for k, v in row.items() if not k.endswith("_line")} for s in studies for row in per_size(s)]
    return pd.DataFrame(rows).to_csv(index=False)


# --- figures --------------------------------------------------------------------------------------

def _style(study: Study, line: Line) -> dict:
    i = study.lines.index(line)
    return {"color": plots.COLOURS[i % len(plots.COLOURS)], "marker": plots.MARKERS[i % len(plots.MARKERS)]}


def _label(line: Line) -> str:
    ns = sorted({len(v) for v in line.acc.values()})
    n = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}–{ns[-1]}"
    return f"{line.name} · {line.category} ({n})"


def _footnote(studies: list[Study], what: str) -> str:
    return "\n".join([f"Environment: {plots.environment_line([r for s in studies for r in s.records])}",
                      "Hardware: " + "; ".join(dict.fromkeys(s.hardware for s in studies)), what])


def accuracy_vs_size(studies: list[Study]) -> Figure:
    fig, axes = plots.figure(len(studies), FIGURES["study_accuracy_vs_size"], _footnote(
        studies, "Points: median final-epoch validation accuracy over the n runs in the legend; error bars: "
                 "interquartile range where n > 1. Dotted lines: crossovers, interpolated on log size."))
    for ax, study in zip(axes, studies):
        for line in study.lines:
            sizes = [s for s in study.sizes if line.acc.get(s)]
            stats = [describe(line.acc[s]) for s in sizes]
            y = [d["median"] for d in stats]
            err = ([[d["median"] - d["q1"] for d in stats], [d["q3"] - d["median"] for d in stats]]
                   if any(d["n"] > 1 for d in stats) else None)
            ax.errorbar(sizes, y, yerr=err, capsize=3, linewidth=2, markersize=6, label=_label(line),
                        **_style(study, line))
        for x in crossovers(study):
            if x.at is not None:
                ax.axvline(x.at, linestyle=":", color="#444444", linewidth=1.2, gid="crossover")
                caveat = "" if x.decided else " (within noise)"
                ax.text(x.at, 0.02, f" {x.challenger.split(' (')[0].lower()} {x.verb}\n {x.incumbent} ≈{x.at:,.0f}{caveat}",
                        transform=ax.get_xaxis_transform(), fontsize=7, rotation=90, va="bottom", color="#444444")
        _size_axis(ax, study.sizes)
        _accuracy_panel(ax, study)
    return fig


def _accuracy_panel(ax, study: Study) -> None:
    """What both figures' panels share: the block as title, accuracy in percent, grid, legend below."""
    ax.set(title=plots.panel_title(study.title), ylabel="Final validation accuracy (%)")
    ax.title.set_fontsize(9)
    plots.percent_axis(ax)
    ax.grid(alpha=0.3)
    plots.legend_below(ax)


def _size_axis(ax, sizes: list[int]) -> None:
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{s:,}" for s in sizes])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("Training images (log scale)")


def accuracy_vs_time(studies: list[Study]) -> Figure:
    fig, axes = plots.figure(len(studies), FIGURES["study_accuracy_vs_time"], _footnote(
        studies, "Points: median over the n runs in the legend, one per training-set size (labelled). Cost: wall "
                 "seconds of one run's epochs, plus the one-time feature extraction for cached-features runs."))
    for ax, study in zip(axes, studies):
        for line in study.lines:
            sizes = [s for s in study.sizes if line.acc.get(s)]
            x, y = [line.median(s, "cost") for s in sizes], [line.median(s) for s in sizes]
            style = _style(study, line)
            ax.plot(x, y, linewidth=2, markersize=6, label=_label(line), **style)
            for s, xi, yi in zip(sizes, x, y):
                ax.annotate(f"{s:,}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7,
                            color=style["color"])
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 10, 100 rather than 10^1, 10^2
        ax.set_xlabel("Training cost per run (s, wall clock; log scale)")
        _accuracy_panel(ax, study)
    return fig


def figures(studies: list[Study]) -> dict[str, Figure]:
    return {"study_accuracy_vs_size": accuracy_vs_size(studies), "study_accuracy_vs_time": accuracy_vs_time(studies)}


# --- the lesson's four cases beside the measurement -----------------------------------------------

def load_cases() -> dict:
    return yaml.safe_load(CASES.read_text())


def judge(study: Study, size: int, prescribed: list[str]) -> tuple[str, str]:
    """(what was measured, verdict) for a prescription at one size: the best prescribed strategy against the
    best of the others; where that comparison has no interval (n=1) or is within noise, any other strategy
    that beats the prescribed one beyond noise still refutes it."""
    p = best(study, size, prescribed)
    q = best(study, size, [c for c in CATEGORIES if c not in prescribed])
    if p is None:
        return f"no {' or '.join(prescribed)} strategy in this study", "inconclusive (not measured)"
    if q is None:
        return f"only {' or '.join(prescribed)} strategies in this study", "inconclusive (nothing to compare)"
    iv, noise = versus(q.acc[size], p.acc[size])
    measured = (f"at {size:,} images: {p.name} {tables.pct(p.median(size))} against the best other, {q.name} "
                f"({q.category}), {tables.pct(q.median(size))}: {100 * (p.median(size) - q.median(size)):+.1f} pts "
                f"({noise})")
    if beyond(iv):
        return measured, "agrees" if iv.low > 0 else "disagrees"
    for other in sorted((ln for ln in study.lines if ln.category not in prescribed and ln.acc.get(size)),
                        key=lambda ln: -ln.median(size)):
        o_iv, o_noise = versus(other.acc[size], p.acc[size])
        if beyond(o_iv) and o_iv.high < 0:
            return (measured + f"; against {other.name} ({other.category}), {tables.pct(other.median(size))}: "
                    f"{100 * (p.median(size) - other.median(size)):+.1f} pts ({o_noise})"), "disagrees"
    return measured, "inconclusive (n=1)" if iv is None else "inconclusive (within noise)"


def cases(study: Study, ref: dict) -> str:
    known = ref["datasets"].get(study.dataset)
    rows = []
    for case in ref["cases"]:
        name = f"{case['case']}: {case['size']} data set, {case['similarity']} data"
        prescribe = f"{' or '.join(case['prescribe'])}: {case['summary']}. {case['quote']}"
        if known is None:
            covered, measured, verdict = (f"not covered: the harness does not know how similar {study.dataset} is "
                                          "to ImageNet", "—", "—")
        elif known["similarity"] != case["similarity"]:
            covered, measured, verdict = f"not covered: needs {ref['needs'][case['similarity']]}", "—", "—"
        else:
            size = study.sizes[0] if case["size"] == "small" else study.sizes[-1]
            end = "smallest" if case["size"] == "small" else "largest"
            covered = (f"yes: {study.dataset} is {known['similarity']} ({known['reason']}); {size:,} images, "
                       f"the {end} size")
            measured, verdict = judge(study, size, case["prescribe"])
        rows.append([name, prescribe, covered, measured, f"**{verdict}**"])
    header = ["Case", f"The {ref['short']} prescribes", "Covered by this study", "Measured", "Verdict"]
    return tables.markdown_table(pd.DataFrame(rows, columns=header))


def _scale(study: Study, ref: dict) -> str:
    """What 'small' and 'large' can mean for this sweep, in the lesson's own terms."""
    lo, hi = study.sizes[0], study.sizes[-1]
    if hi >= ref["scale"]["large"]:
        where = f"the sweep reaches the {ref['short']}'s large scale ({hi:,} images)"
    else:
        where = (f"every size ({lo:,} to {hi:,} images) is small by that scale. The sweep's smallest size stands "
                 "for the small cases and its largest for the relatively large end: a verdict on a 'large' case is "
                 f"about the direction of the trend, not about the {ref['short']}'s large regime")
    return f"The {ref['short']}'s scale: {ref['scale_quote']} Here {where}."


# --- assembly -------------------------------------------------------------------------------------

def _protocol(study: Study) -> list[str]:
    """The settings the suite set by size, said once rather than splitting every strategy's line."""
    if not study.protocol:
        return []
    said = "; ".join(f"{k} " + ", ".join(f"{v} at {s:,}" for s, v in sorted(per.items()))
                     for k, per in study.protocol.items())
    return [f"Set by training-set size for every strategy: {said}.", ""]


def markdown(studies: list[Study], level: int = 1) -> str:
    """The study section: per block the table, the crossovers, every strategy, the figures, the four cases."""
    h = "#" * level
    ref = load_cases()
    parts = [f"{h} Training-set size study", ""]
    for study in studies:
        parts += [f"{h}# {study.title}", "", f"_{study.hardware}_", "",
                  "Per data size: the best strategy, its margin, and its cost in time.", "", table(study), "",
                  " ".join(sentence(x) for x in crossovers(study)), "", *_protocol(study), "Every strategy at every size "
                  "(final val acc · cost per run):", "", matrix(study), "",
                  "Strategies: " + "; ".join(f"**{ln.name}**: {ln.category} ({ln.detail})" for ln in study.lines) + ".",
                  ""]
    parts += [NOTE, ""]
    for name, title in FIGURES.items():
        parts += [f"![{title}](figures/{name}.png)", ""]
    parts += [f"{h}# The {ref['short']}'s four cases beside the measurement", "", f"Source: {ref['source']}", ""]
    for study in studies:
        parts += [f"**{study.title}**", "", _scale(study, ref), "", cases(study, ref), ""]
    parts += [f"A 'different' verdict carries a doubt of the sources' own: {ref['caveat']} Verdicts compare the best "
              "prescribed strategy with the best of the others by final validation accuracy: agrees or disagrees only "
              "where the 95 % interval of the difference excludes 0; otherwise inconclusive.", ""]
    return "\n".join(parts)


def write(folder: Path, records: list[dict]) -> list[Path]:
    """study.md, study.csv and the two figures (PNG and SVG) when the records hold a study; else nothing."""
    studies = find(records)
    if not studies:
        return []
    folder = Path(folder)
    atomic_write(folder / "study.md", markdown(studies))
    atomic_write(folder / "study.csv", csv(studies))
    return [folder / "study.md", folder / "study.csv"] + plots.save(figures(studies), folder / "figures")


def section(records: list[dict]) -> str:
    """The report's section (figures as written by `write` into the same folder)."""
    return markdown(find(records), level=2)
