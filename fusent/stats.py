"""Significance tests for comparing fusion heads (paper 003 §3.1.4): paired t-test, McNemar, Wilcoxon signed-rank on
per-sample errors, one-way ANOVA, and Holm's correction when every pair of heads is tested at once."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats


def paired_t(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired t-test of two heads' scores over the same seeds (or folds): ``t``, ``df`` = pairs - 1, two-sided
    ``p`` and the mean difference a - b. t and p are NaN when undefined (fewer than two pairs, or every difference
    identical): a reader must see that no test was possible, not p = 1."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    diff = a - b
    out = {"t": math.nan, "df": float(max(len(a) - 1, 0)), "p": math.nan, "mean_diff": math.nan}
    if len(a):
        out["mean_diff"] = float(diff.mean())
    if len(a) < 2 or np.allclose(diff, diff[0]):
        return out
    result = stats.ttest_rel(a, b)
    return {**out, "t": float(result.statistic), "p": float(result.pvalue)}


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """``(t, p)`` of ``paired_t``."""
    result = paired_t(a, b)
    return result["t"], result["p"]


def mcnemar_exact(y_true: Sequence[int], pred_a: Sequence[int], pred_b: Sequence[int]) -> dict[str, float]:
    """Exact McNemar test on one labelled set: ``b`` = only A right, ``c`` = only B right,
    ``p = min(1, 2 * BinomCDF(min(b, c); b + c, 1/2))``; p = 1 when the heads never disagree on correctness."""
    y, a, bb = (np.asarray(x) for x in (y_true, pred_a, pred_b))
    only_a = int(((a == y) & (bb != y)).sum())
    only_b = int(((a != y) & (bb == y)).sum())
    n = only_a + only_b
    p = 1.0 if n == 0 else float(min(1.0, 2 * stats.binom.cdf(min(only_a, only_b), n, 0.5)))
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p": p}


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Wilcoxon signed-rank test of paired per-sample values (e.g. two heads' absolute errors on the same test
    samples): ``W`` (the smaller rank sum), ``n`` (pairs that differ; ties at zero are dropped, Wilcoxon's own
    convention), two-sided ``p``; p = 1 when no pair differs. Distribution-free, so skewed |error| is no problem."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    n = int(np.count_nonzero(a - b))
    if n == 0:
        return {"W": math.nan, "n": 0, "p": 1.0}
    result = stats.wilcoxon(a, b, zero_method="wilcox")
    return {"W": float(result.statistic), "n": n, "p": float(result.pvalue)}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values tested together (every pair of heads): with the m defined p-values
    sorted ascending, ``p_(i) -> max_{j <= i} min(1, (m - j + 1) p_(j))``. Controls the family-wise error rate
    without Bonferroni's loss of power. A NaN (a test that could not be run) stays NaN and is not counted in m."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), math.nan)
    defined = np.flatnonzero(~np.isnan(p))
    m = len(defined)
    running = 0.0
    for rank, i in enumerate(defined[np.argsort(p[defined], kind="mergesort")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def anova(groups: Sequence[Sequence[float]]) -> dict[str, Any]:
    """One-way ANOVA across heads (each group = one head's scores over seeds): ``F``, ``df_between`` = k - 1,
    ``df_within`` = N - k, ``p``. F and p are NaN when undefined (fewer than two groups, no within-group degrees of
    freedom, or every score equal)."""
    groups = [np.asarray(g, dtype=float) for g in groups if len(g)]
    k, n = len(groups), sum(len(g) for g in groups)
    out = {"F": math.nan, "df_between": max(k - 1, 0), "df_within": max(n - k, 0), "p": math.nan}
    if k < 2 or n <= k or all(np.allclose(g, g[0]) for g in groups):
        return out
    result = stats.f_oneway(*groups)
    return {**out, "F": float(result.statistic), "p": float(result.pvalue)}


def one_way_anova(groups: Sequence[Sequence[float]]) -> tuple[float, float]:
    """``(F, p)`` of ``anova``."""
    result = anova(groups)
    return result["F"], result["p"]
