"""What a run's numbers must not be read as: diagnostics computed from stored records alone (no Keras).

Each diagnostic names what it found, how much it matters (severity), says it in one line, keeps the
numbers behind it (evidence, with a short `text`), and lists the table cells it concerns (`affects`):

  accuracy@N          the validation accuracy at epoch N
  seconds_per_epoch   the steady epochs' time (and so their throughput)
  first_epoch         epoch 1's time

Per run (`for_record`, `for_records`): batchnorm-statistics, diverged, did-not-learn, overfitting,
input-bound, compile-dominated, steady-slower-than-first, noisy-timing, gpu-throttled. Per configuration,
over its repeats (`for_group`, `for_groups`): too-few-samples. `markers` turns both into footnote numbers
per table cell; `text` into the lines `tlbench diagnose` prints.

Accuracies are judged against their binomial noise on the images they were measured on, at the level of
every interval in tlbench (stats.LEVEL), never against a fixed number of points.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

from .config import RunConfig, complete
from .finetune import batchnorm
from .modes import MODES
from .stats import LEVEL

SEVERITIES = ("error", "warning", "note")  # error: the number misleads; warning: read it with care; note: context
SECONDS = "seconds_per_epoch"
FIRST = "first_epoch"

Z = statistics.NormalDist().inv_cdf(0.5 + LEVEL / 2)
# Validation this far below training calls for the BatchNorm check: beyond the widest gap of the published
# default records (8 points, the frozen head at 92 vs 84 %), short of the BatchNorm failures measured
# on these VMs with plain Keras: 74 points (85 % training, 10.9 % validation, scratch) and about 36 (unfrozen at 54 %).
# Heavy overfitting of a small training set can reach it too: the check tells the two apart.
FAR_BELOW = 0.20
# The BatchNorm check explains the gap when batch statistics win back at least this share of it.
EXPLAINED = 0.5
# Overfitting: the train - validation gap grew by this much while validation fell for OVERFIT_PAST epochs.
OVERFIT_GROWTH = 0.05
OVERFIT_PAST = 2
# The input pipeline's time beyond which an epoch's seconds say as much about the input as about the model.
INPUT_BOUND = 0.05
# A first epoch at twice the steady one is more one-off work (tracing, compilation) than training.
COMPILE_DOMINATED = 2.0
# Steady epochs of one run spread beyond this coefficient of variation are a noisy sample: the published
# records stay within 7 %, a disturbed run on these VMs reached 24 % (26.5-41.7 s).
NOISY_CV = 0.10
MIN_STEADY = 3  # fewer steady epochs give no spread worth the name


def accuracy_cell(epoch: int) -> str:
    return f"accuracy@{epoch}"


@dataclass(frozen=True)
class Diagnostic:
    name: str
    severity: str
    explanation: str  # one line
    evidence: dict = field(default_factory=dict)  # numbers, and `text`: them in words
    affects: tuple[str, ...] = ()


# --- reading a record ------------------------------------------------------------------------

def _number(value) -> float | None:
    """A finite number, or None (missing, null, NaN: what a diverged epoch records)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def images(record: dict, which: str) -> int | None:
    """Images of the "train" or "val" split a run used: the record's data, else the configured size (None: all)."""
    return (record.get("data") or {}).get(f"{which}_images") or record["config"].get(f"{which}_size")


def _margin(p: float, n: int, compared: int = 1) -> float:
    """Half the interval of an accuracy p measured on n images; compared=2: of the difference of two such."""
    return Z * math.sqrt(compared * p * (1 - p) / n)


def _stages(record: dict) -> dict[int, tuple[dict | None, list[dict]]]:
    """stage -> (its first epoch, its steady epochs): epochs of different stages train different weights."""
    out: dict[int, tuple[dict | None, list[dict]]] = {}
    for e in record["epochs"]:
        first, steady = out.get(e.get("stage", 1), (None, []))
        if e["phase"] == "first":
            first = e
        else:
            steady = [*steady, e]
        out[e.get("stage", 1)] = (first, steady)
    return out


def _pct(v: float) -> str:
    return f"{100 * v:.1f} %"


def _secs(v: float) -> str:
    return f"{v:.3g} s"


# --- accuracy ----------------------------------------------------------------------------------

def diverged(record: dict) -> list[Diagnostic]:
    bad = [e["epoch"] for e in record["epochs"] if e.get("loss") is not None and _number(e["loss"]) is None]
    if record["status"] != "diverged" and not bad:
        return []
    at = bad[0] if bad else len(record["epochs"]) or 1
    planned = record["config"]["epochs"]
    return [Diagnostic("diverged", "error", f"the training loss became NaN or infinite at epoch {at}: the run "
                       "stopped there, and its accuracy from then on is no measurement",
                       {"epoch": at, "text": f"loss not finite at epoch {at} of {planned}"},
                       tuple(accuracy_cell(n) for n in range(at, planned + 1)))]


def did_not_learn(record: dict) -> list[Diagnostic]:
    """Validation accuracy within its binomial noise of 1 / classes (a balanced validation set's chance)."""
    classes, n = (record.get("data") or {}).get("classes"), images(record, "val")
    rows = [e for e in record["epochs"] if _number(e.get("val_accuracy")) is not None]
    if not classes or not n or not rows:
        return []
    chance = 1 / classes
    ceiling = chance + _margin(chance, n)
    at_chance = [e["epoch"] for e in rows if e["val_accuracy"] <= ceiling]
    last = rows[-1]
    if last["epoch"] not in at_chance:
        return []
    train = _number(last.get("accuracy"))
    train_n = images(record, "train")
    learnt = train is not None and bool(train_n) and train > chance + _margin(chance, train_n)
    why = (f"training reached {_pct(train)}, so what it learnt does not carry over to validation" if learnt
           else "training did not leave chance either")
    return [Diagnostic("did-not-learn", "error", f"validation accuracy is at chance for {classes} classes "
                       f"({_pct(last['val_accuracy'])} at epoch {last['epoch']}): {why}",
                       {"val_accuracy": last["val_accuracy"], "train_accuracy": train, "chance": chance,
                        "ceiling": ceiling, "val_images": n, "epochs_at_chance": at_chance,
                        "text": f"chance {_pct(chance)} + {_pct(ceiling - chance)} binomial margin on {n} images "
                                f"(≤ {_pct(ceiling)}); at chance at epochs {', '.join(map(str, at_chance))}"},
                       tuple(accuracy_cell(e) for e in at_chance))]


def _batchnorm_trains(record: dict) -> bool:
    """Whether any BatchNorm layer normalised by batch statistics in training (so its moving ones may lag)."""
    if "batchnorm_check" in record:
        return record["batchnorm_check"] is not None
    config = RunConfig.from_dict(complete(record["config"]))
    if config.mode not in MODES:
        return False
    return MODES.get(config.mode).trainable and batchnorm(config) == "train"


def batchnorm_statistics(record: dict) -> list[Diagnostic]:
    """Validation far below training, and whether BatchNorm's moving statistics are why (the runner's check)."""
    if not _batchnorm_trains(record):
        return []
    gaps = {e["epoch"]: (e["accuracy"], e["val_accuracy"]) for e in record["epochs"]
            if _number(e.get("accuracy")) is not None and _number(e.get("val_accuracy")) is not None}
    far = [n for n, (train, val) in gaps.items() if train - val >= FAR_BELOW]
    check = record.get("batchnorm_check")
    lead = check["batch_accuracy"] - check["moving_accuracy"] if check else None
    if not far and not (lead is not None and lead >= FAR_BELOW):
        return []
    widest = max(gaps, key=lambda n: gaps[n][0] - gaps[n][1]) if gaps else None
    seen = (f"training {_pct(gaps[widest][0])} vs validation {_pct(gaps[widest][1])} at epoch {widest}"
            if widest else "no training accuracy recorded")
    last = gaps[max(gaps)][0] - gaps[max(gaps)][1] if gaps else None
    verdict, severity, evidence = _verdict(check, last)
    evidence.update(gap_epochs=far, widest_gap_epoch=widest, last_gap=last,
                    text="; ".join([seen, *filter(None, [evidence.get("text")])]))
    return [Diagnostic("batchnorm-statistics", severity,
                       "validation far below training, as when BatchNorm's moving statistics have not converged; "
                       + verdict, evidence, tuple(accuracy_cell(n) for n in far or [record["epochs"][-1]["epoch"]]))]


def _verdict(check: dict | None, gap: float | None) -> tuple[str, str, dict]:
    """(what the runner's check says of the cause, severity, evidence): the cause when batch statistics score
    beyond the noise of the difference and win back at least EXPLAINED of the last epoch's gap."""
    if check is None:
        return "unconfirmed: this record has no BatchNorm check (recorded before the runner made it)", "warning", {}
    lead = check["batch_accuracy"] - check["moving_accuracy"]
    margin = _margin((check["batch_accuracy"] + check["moving_accuracy"]) / 2, check["images"], compared=2)
    cause = lead > margin and (gap is None or lead >= EXPLAINED * gap)
    said = (f"{check['images']} validation images score {_pct(check['batch_accuracy'])} with batch statistics "
            f"and {_pct(check['moving_accuracy'])} with the moving ones")
    return (("it is the cause: " if cause else "it is not the cause: ") + said, "error" if cause else "note",
            {"batch_accuracy": check["batch_accuracy"], "moving_accuracy": check["moving_accuracy"],
             "margin": margin, "cause": cause,
             "text": f"check at the end of the run: batch − moving {100 * lead:+.1f} points "
                     f"(noise ±{100 * margin:.1f})"})


def overfitting(record: dict) -> list[Diagnostic]:
    """The train - validation gap grew while validation, having risen to its best, fell for OVERFIT_PAST epochs
    beyond its noise. Epoch 1 is left out of the gap: its training accuracy is a running mean over an epoch of
    fast learning, below what the model scores at its end."""
    n = images(record, "val")
    rows = [e for e in record["epochs"] if _number(e.get("accuracy")) is not None
            and _number(e.get("val_accuracy")) is not None]
    if not n or len(rows) < OVERFIT_PAST + 2:
        return []
    val = [e["val_accuracy"] for e in rows]
    best = max(range(len(val)), key=val.__getitem__)
    margin = _margin(val[best], n, compared=2)
    rose = all(b >= a - margin for a, b in zip(val[:best], val[1:best + 1]))  # a swing is instability, not this
    past = val[-OVERFIT_PAST:]
    gaps = [e["accuracy"] - e["val_accuracy"] for e in rows[1:]]
    growth = gaps[-1] - min(gaps[:-1])
    if not (rose and best < len(val) - OVERFIT_PAST and all(v < val[best] - margin for v in past)
            and growth >= OVERFIT_GROWTH):
        return []
    epochs = [e["epoch"] for e in rows[best + 1:]]
    return [Diagnostic("overfitting", "warning",
                       f"validation peaked at epoch {rows[best]['epoch']} ({_pct(val[best])}) and fell while "
                       f"training accuracy rose: the later epochs fit the training set, not the task",
                       {"best_epoch": rows[best]["epoch"], "best_val_accuracy": val[best],
                        "last_val_accuracy": val[-1], "gap_growth": growth, "margin": margin,
                        "text": f"validation {_pct(val[best])} → {_pct(val[-1])} (noise ±{100 * margin:.1f} "
                                f"points); train − validation gap grew {100 * growth:.1f} points"},
                       tuple(accuracy_cell(e) for e in epochs))]


# --- time --------------------------------------------------------------------------------------

def input_bound(record: dict) -> list[Diagnostic]:
    pipeline = (record.get("input_pipeline") or {}).get("seconds_per_epoch")
    if pipeline is None:
        return []
    shares = {e["epoch"]: pipeline / e["epoch_seconds"] for e in record["epochs"] if e["epoch_seconds"] > 0}
    over = [n for n, share in shares.items() if share > INPUT_BOUND]
    if not over:
        return []
    phases = {e["epoch"]: e["phase"] for e in record["epochs"]}
    worst = max(shares[n] for n in over)
    return [Diagnostic("input-bound", "warning",
                       f"the input pipeline alone takes {_secs(pipeline)} per epoch, up to {_pct(worst)} of an epoch: "
                       f"that much of the time may be waiting for batches rather than training",
                       {"pipeline_seconds": pipeline, "share": {n: shares[n] for n in over},
                        "text": f"pipeline {_secs(pipeline)} per epoch (measured alone after training: an upper bound "
                                f"of the wait); over {_pct(INPUT_BOUND)} at epochs {', '.join(map(str, over))}"},
                       tuple(dict.fromkeys(FIRST if phases[n] == "first" else SECONDS for n in over)))]


def compile_dominated(record: dict) -> list[Diagnostic]:
    out = []
    for stage, (first, steady) in _stages(record).items():
        if first is None or not steady:
            continue
        typical = statistics.median(e["epoch_seconds"] for e in steady)
        where = f"stage {stage}'s first epoch" if stage > 1 else "epoch 1"
        if first["epoch_seconds"] >= COMPILE_DOMINATED * typical:
            out.append(Diagnostic("compile-dominated", "note",
                                  f"{where} took {_secs(first['epoch_seconds'])} against {_secs(typical)} for a steady "
                                  f"one: most of it is one-off tracing and compilation, not training",
                                  {"first_seconds": first["epoch_seconds"], "steady_median_seconds": typical,
                                   "text": f"first / steady = {first['epoch_seconds'] / typical:.1f}"}, (FIRST,)))
        slower = [e for e in steady if e["epoch_seconds"] > first["epoch_seconds"]]
        if slower:
            worst = max(slower, key=lambda e: e["epoch_seconds"])
            out.append(Diagnostic("steady-slower-than-first", "warning",
                                  f"steady epoch {worst['epoch']} took {_secs(worst['epoch_seconds'])}, longer than "
                                  f"{where} ({_secs(first['epoch_seconds'])}) which carries compilation: something "
                                  "outside the model slowed it",
                                  {"first_seconds": first["epoch_seconds"],
                                   "slower": {e["epoch"]: e["epoch_seconds"] for e in slower},
                                   "text": _load_text(record, worst)}, (SECONDS, FIRST)))
    return out


def noisy_timing(record: dict) -> list[Diagnostic]:
    out = []
    for stage, (_, steady) in _stages(record).items():
        seconds = [e["epoch_seconds"] for e in steady]
        if len(seconds) < MIN_STEADY:
            continue
        cv = statistics.stdev(seconds) / statistics.mean(seconds)
        if cv <= NOISY_CV:
            continue
        slowest = max(steady, key=lambda e: e["epoch_seconds"])
        within = f" in stage {stage}" if stage > 1 else ""
        out.append(Diagnostic("noisy-timing", "warning",
                              f"steady epochs{within} vary {min(seconds):.3g}–{_secs(max(seconds))} "
                              f"(coefficient of variation {_pct(cv)}): their median is a noisy sample of this "
                              "machine's speed",
                              {"seconds": seconds, "cv": cv, "load": _load_evidence(record),
                               "throttled": bool(_throttling(record)), "text": _load_text(record, slowest)},
                              (SECONDS,)))
    return out


def _load_evidence(record: dict) -> dict:
    load = record.get("load") or {}
    return {k: load.get(k) for k in ("loadavg_start", "loadavg_end", "others_fraction", "steal_fraction")} | {
        "busy_processes": [b.get("name") for b in load.get("busy_processes") or []],
        "epochs": {e["epoch"]: e["load"] for e in record["epochs"] if e.get("load")}}


def _load_text(record: dict, slow: dict) -> str:
    """What else ran: during the slow epoch (if its row says) and over the whole run; GPU throttling."""
    parts = []
    if epoch := slow.get("load"):
        parts.append(f"during epoch {slow['epoch']} others used {_pct(epoch['others_fraction'])} of the CPUs, "
                     f"steal {_pct(epoch['steal_fraction'])}, 1-min load {epoch.get('loadavg_1min')}")
    load = record.get("load") or {}
    if load.get("others_fraction") is not None:
        busy = ", ".join(f"{b['name']} ({b['cores']} cores)" for b in load.get("busy_processes") or [])
        parts.append(f"over the run others used {_pct(load['others_fraction'])}, steal "
                     f"{_pct(load.get('steal_fraction', 0))}, 1-min load {_first(load.get('loadavg_start'))} → "
                     f"{_first(load.get('loadavg_end'))}" + (f"; busy: {busy}" if busy else ""))
    parts += _throttling(record)
    return "; ".join(parts) or "no load recorded"


def _first(values) -> float | None:
    return values[0] if values else None


def _throttling(record: dict) -> list[str]:
    """Each GPU that NVML saw held down during the run, in words."""
    gpu = record.get("gpu") or {}
    out = [f"GPU {t['index']} throttled {t[k]:.1f} s for {k}" for t in gpu.get("throttled_seconds") or []
           for k in ("power", "thermal") if (t.get(k) or 0) > 0]
    reasons = sorted({(g["index"], r) for e in record["epochs"] for g in e.get("gpu") or []
                      for r in g.get("throttle_reasons") or []})
    return out + [f"GPU {i}: {r} at an epoch's end" for i, r in reasons]


def gpu_throttled(record: dict) -> list[Diagnostic]:
    found = _throttling(record)
    if not found:
        return []
    return [Diagnostic("gpu-throttled", "warning", "the GPU held its clocks down for power or heat during the run: "
                       "its epochs measure a throttled GPU", {"text": "; ".join(found)}, (SECONDS, FIRST))]


PER_RUN = (diverged, did_not_learn, batchnorm_statistics, overfitting, input_bound, compile_dominated, noisy_timing,
           gpu_throttled)


def for_record(record: dict) -> list[Diagnostic]:
    return [d for check in PER_RUN for d in check(record)]


def for_records(records: list[dict]) -> dict[str, list[Diagnostic]]:
    """run_id -> its diagnostics (an empty list for a clean run)."""
    return {r["run_id"]: for_record(r) for r in records}


# --- a configuration's repeats -------------------------------------------------------------------

def for_group(records: list[dict]) -> list[Diagnostic]:
    """Over the repeats of one configuration: too few samples for what its cells claim."""
    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        return []
    steady = sum(e["phase"] == "steady" for r in ok for e in r["epochs"])
    epochs = max(r["config"]["epochs"] for r in ok)
    out = []
    if len(ok) == 1:
        out.append(Diagnostic("too-few-samples", "warning", "one finished run: its accuracy and first epoch are a "
                              "single sample, with no spread to tell a difference from run-to-run noise",
                              {"runs": 1, "text": f"1 of {len(records)} runs finished"},
                              (*(accuracy_cell(n) for n in range(1, epochs + 1)), FIRST)))
    if steady < MIN_STEADY:
        out.append(Diagnostic("too-few-samples", "warning", f"{steady} steady epochs in all: too few for a time per "
                              "epoch with a spread", {"steady_epochs": steady, "text": f"{steady} < {MIN_STEADY}"},
                              (SECONDS,)))
    return out


def _default_key(record: dict) -> str:
    from .tables import group_key  # here, not at the top: tables imports this module for its markers

    return group_key(record)


def _grouped(records: list[dict], key=None) -> dict[str, list[dict]]:
    """group key -> its records; the key is the table's row (tables.group_key) by default."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault((key or _default_key)(r), []).append(r)
    return groups


def for_groups(records: list[dict], key=None) -> dict[str, list[Diagnostic]]:
    """group key -> the diagnostics of its repeats (`key` as `_grouped`)."""
    return {k: for_group(rs) for k, rs in _grouped(records, key).items()}


# --- for the table, the figures and `tlbench diagnose` ---------------------------------------------

_SUPERSCRIPT = str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹")


@dataclass
class Footnotes:
    notes: list[str]  # footnote N is notes[N - 1]
    cells: dict[tuple[str, str], list[int]]  # (group key, cell) -> its footnote numbers

    def mark(self, group: str, cell: str) -> str:
        """What follows a cell's text: '⁽¹⁾⁽³⁾', or '' for a cell no diagnostic concerns."""
        return "".join(f"⁽{str(n).translate(_SUPERSCRIPT)}⁾" for n in self.cells.get((group, cell), []))


def markers(records: list[dict], key=None) -> Footnotes:
    """One footnote per diagnostic name per table row (its runs' findings together), numbered in the order of
    the records; `key` is the row's key, tables.group_key by default."""
    found: dict[tuple[str, str], list[tuple[str, Diagnostic]]] = {}
    for r in records:
        for d in for_record(r):
            found.setdefault(((key or _default_key)(r), d.name), []).append((r["run_id"], d))
    for group, diagnostics in for_groups(records, key).items():
        for d in diagnostics:
            found.setdefault((group, d.name), []).append(("over the row's runs", d))
    notes, cells = [], {}
    for (group, name), items in found.items():
        notes.append(f"{name} ({items[0][1].severity}): " + "; ".join(
            f"{who}: {d.explanation} ({d.evidence.get('text')})" for who, d in items))
        for cell in dict.fromkeys(c for _, d in items for c in d.affects):
            cells.setdefault((group, cell), []).append(len(notes))
    return Footnotes(notes, cells)


def text(records: list[dict], key=None) -> list[str]:
    """The lines `tlbench diagnose` prints: each run's and each configuration's diagnostics, then a count."""
    lines = []

    def show(title: str, diagnostics: list[Diagnostic]) -> None:
        if diagnostics:
            lines.append(title)
        for d in diagnostics:
            lines.extend([f"  {d.severity} {d.name}: {d.explanation}", f"    evidence: {d.evidence.get('text')}"])

    per_run = for_records(records)
    for run_id, diagnostics in per_run.items():
        show(f"run {run_id}", diagnostics)
    groups = _grouped(records, key)
    per_group = {k: for_group(rs) for k, rs in groups.items()}
    for group, diagnostics in per_group.items():
        show(f"configuration of {', '.join(sorted(r['run_id'] for r in groups[group]))}", diagnostics)
    every = [d for ds in [*per_run.values(), *per_group.values()] for d in ds]
    counts = {s: sum(d.severity == s for d in every) for s in SEVERITIES}
    said = ", ".join(f"{k} {s}" + ("s" if k > 1 else "") for s, k in counts.items() if k)
    lines.append(f"{len(records)} runs, {len(groups)} configurations: "
                 + (f"{len(every)} diagnostics ({said})" if every else "no diagnostics"))
    return lines
