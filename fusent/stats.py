"""Significance tests for comparing fusion heads (paper 003 §3.1.4): paired t-test, McNemar, one-way ANOVA."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """Paired t-test of two heads' scores over the same seeds: ``(t, p)``; NaN when it is undefined
    (fewer than two pairs, or every difference identical)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    diff = a - b
    if len(a) < 2 or np.allclose(diff, diff[0]):
        return math.nan, math.nan
    result = stats.ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def mcnemar_exact(y_true: Sequence[int], pred_a: Sequence[int], pred_b: Sequence[int]) -> dict[str, float]:
    """Exact McNemar test on one validation set: ``b`` = only A right, ``c`` = only B right,
    ``p = min(1, 2 * BinomCDF(min(b, c); b + c, 1/2))``; p = 1 when the heads never disagree on correctness."""
    y, a, bb = (np.asarray(x) for x in (y_true, pred_a, pred_b))
    only_a = int(((a == y) & (bb != y)).sum())
    only_b = int(((a != y) & (bb == y)).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(min(1.0, 2 * stats.binom.cdf(min(only_a, only_b), n, 0.5)))
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p": p}


def one_way_anova(groups: Sequence[Sequence[float]]) -> tuple[float, float]:
    """One-way ANOVA across heads (each group = one head's scores over seeds): ``(F, p)``; NaN if undefined."""
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    if len(groups) < 2 or sum(len(g) for g in groups) <= len(groups):
        return math.nan, math.nan
    if all(np.allclose(g, g[0]) for g in groups):
        return math.nan, math.nan
    result = stats.f_oneway(*groups)
    return float(result.statistic), float(result.pvalue)
