"""The statistics every published number and every verdict goes through, in one place.

Describing: a cell is the median of its samples with the interquartile range and n. A sample is one
measurement: one steady epoch of one repeat for epoch times and throughput (every steady epoch of every
repeat counts), one repeat for accuracy at an epoch and for the first epoch.

Deciding (compare): epochs of one process share its conditions (the machine's load, the process's memory
layout, the neighbours), so they are not independent of each other; runs are. A run is summarised by
the median of its samples, and the two sides are compared with Welch's t interval over those per-run
values — on the log scale for times and throughputs (a ratio), in points for accuracy. See `verdict`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _scipy

LEVEL = 0.95  # two-sided confidence of the interval a verdict reads


def describe(values) -> dict:
    """median, q1, q3 (interquartile range), min, max and n of the finite values (NaN when there are none)."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if not len(v):
        return {"median": np.nan, "q1": np.nan, "q3": np.nan, "min": np.nan, "max": np.nan, "n": 0}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3), "min": float(v.min()), "max": float(v.max()),
            "n": int(len(v))}


@dataclass
class Interval:
    """The change from baseline to current with its confidence interval, in the metric's own terms:
    a ratio current / baseline for times and throughputs, a difference in points for accuracy."""

    estimate: float
    low: float
    high: float
    runs: tuple[int, int]  # (baseline, current) independent runs behind it
    spread: float | None  # the per-run standard deviation used (log scale or points); None if unknown


def _welch(b: np.ndarray, c: np.ndarray, level: float) -> tuple[float, float, float, float | None]:
    """(difference of means c - b, low, high, pooled per-run sd) by Welch's t; infinite bounds without spread."""
    d = float(c.mean() - b.mean())
    vb = b.var(ddof=1) if len(b) > 1 else np.nan
    vc = c.var(ddof=1) if len(c) > 1 else np.nan
    if np.isnan(vb) and np.isnan(vc):
        return d, -math.inf, math.inf, None
    # A side with one run borrows the other side's run-to-run variance: the same machine and suite.
    vb, vc = (vc if np.isnan(vb) else vb), (vb if np.isnan(vc) else vc)
    se2 = vb / len(b) + vc / len(c)
    sd = math.sqrt((vb + vc) / 2)
    if se2 == 0:
        return d, d, d, 0.0
    df = se2 ** 2 / ((vb / len(b)) ** 2 / max(len(b) - 1, 1) + (vc / len(c)) ** 2 / max(len(c) - 1, 1))
    half = float(_scipy.t.ppf(0.5 + level / 2, df)) * math.sqrt(se2)
    return d, d - half, d + half, sd


def ratio(baseline, current, level: float = LEVEL) -> Interval:
    """current / baseline of per-run values (seconds, images/s), from the difference of their logs."""
    b, c = np.log(np.asarray(baseline, float)), np.log(np.asarray(current, float))
    d, lo, hi, sd = _welch(b, c, level)
    return Interval(math.exp(d), math.exp(lo), math.exp(hi), (len(b), len(c)), sd)


def difference(baseline, current, level: float = LEVEL, scale: float = 1.0) -> Interval:
    """current - baseline of per-run values, times `scale` (100: accuracy fractions as points)."""
    d, lo, hi, sd = _welch(scale * np.asarray(baseline, float), scale * np.asarray(current, float), level)
    return Interval(d, lo, hi, (len(baseline), len(current)), sd)


def runs_to_decide(effect: float, sd: float | None, level: float = LEVEL, most: int = 50) -> int | None:
    """Runs per side at which an interval of this per-run sd would exclude no change for this effect
    (log ratio or points); None when the sd is unknown or more than `most` would be needed."""
    if not sd or effect == 0:
        return None
    for n in range(2, most + 1):
        half = float(_scipy.t.ppf(0.5 + level / 2, 2 * n - 2)) * sd * math.sqrt(2 / n)
        if half < abs(effect):
            return n
    return None
