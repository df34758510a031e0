"""The statistics behind table cells and compare's verdicts, checked against hand values and scipy."""
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bench import stats


def test_describe_gives_median_quartiles_and_n():
    d = stats.describe([5.0, 5.0, 5.0, 6.0, None, float("nan")])
    assert d == {"median": 5.0, "q1": 5.0, "q3": 5.25, "min": 5.0, "max": 6.0, "n": 4}
    assert stats.describe([])["n"] == 0 and math.isnan(stats.describe([])["median"])


def test_ratio_interval_is_welchs_on_the_log_scale():
    b, c = [10.0, 10.5, 9.8, 10.2], [12.1, 12.4, 11.9]
    iv = stats.ratio(b, c)
    lb, lc = np.log(b), np.log(c)
    assert iv.estimate == pytest.approx(math.exp(lc.mean() - lb.mean()))
    # scipy's Welch test agrees: the interval excludes no change exactly when p < 0.05
    p = scipy_stats.ttest_ind(lc, lb, equal_var=False).pvalue
    assert (iv.low > 1) == (p < 0.05) and iv.low > 1
    assert iv.runs == (4, 3)


def test_a_side_with_one_run_borrows_the_other_sides_spread_and_none_has_none():
    iv = stats.ratio([10.0, 11.0, 10.5], [13.0])
    assert math.isfinite(iv.low) and iv.spread > 0
    unknown = stats.ratio([10.0], [13.0])
    assert unknown.spread is None and (unknown.low, unknown.high) == (0.0, math.inf)


def test_difference_is_in_the_units_given():
    iv = stats.difference([0.80, 0.81, 0.79], [0.75, 0.76, 0.74])
    assert iv.estimate == pytest.approx(-0.05) and iv.high < 0


def test_runs_to_decide_shrinks_as_the_effect_grows():
    sd = 0.1
    small, large = stats.runs_to_decide(math.log(1.15), sd), stats.runs_to_decide(math.log(1.5), sd)
    assert large < small
    n = small
    half = scipy_stats.t.ppf(0.975, 2 * n - 2) * sd * math.sqrt(2 / n)
    assert half < math.log(1.15) <= scipy_stats.t.ppf(0.975, 2 * n - 4) * sd * math.sqrt(2 / (n - 1))
    assert stats.runs_to_decide(0.01, 1.0) is None and stats.runs_to_decide(0.2, None) is None
