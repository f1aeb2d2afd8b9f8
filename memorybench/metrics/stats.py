"""Statistics shared by the metrics: bootstrap CIs, AUROC, TPR at a fixed FPR.

Bootstrap: percentile bootstrap over *units* (prompts, usually), 2000 resamples by default,
seeded with ``numpy.random.default_rng(seed)`` and vectorised (each resample is a row of
multiplicity counts, so a resampled mean is one matrix product). The same ``seed`` and
inputs always give the same interval.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.stats import rankdata

DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 0


def _as_1d(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64).ravel()
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values")
    return a


_BLOCK_ELEMENTS = 4_000_000  # resample indices drawn per block, to bound memory


def resample_indices(n_units: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED):
    """Yield blocks of bootstrap resamples, each an (rows, n_units) array of unit indices.

    Blocks are drawn in order from one ``default_rng(seed)`` stream with a block size fixed
    by ``n_units`` alone, so results are deterministic and memory stays bounded.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, min(n_resamples, _BLOCK_ELEMENTS // max(1, n_units)))
    done = 0
    while done < n_resamples:
        r = min(rows, n_resamples - done)
        yield rng.integers(0, n_units, size=(r, n_units))
        done += r


def resample_counts(n_units: int, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> np.ndarray:
    """(n_resamples, n_units) multiplicities of each unit in each bootstrap resample."""
    out = []
    for idx in resample_indices(n_units, n_resamples, seed):
        r = idx.shape[0]
        flat = idx + (np.arange(r)[:, None] * n_units)
        out.append(np.bincount(flat.ravel(), minlength=r * n_units).reshape(r, n_units))
    return np.concatenate(out).astype(np.float64)


def _percentile_interval(stats: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    lo, hi = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float] | np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> tuple[float | None, float | None]:
    """Percentile bootstrap CI of the mean of per-unit ``values``; ``(None, None)`` for n < 2."""
    v = _as_1d(values, "values")
    n = v.size
    if n < 2:
        return None, None
    stats = np.concatenate([v[idx].mean(axis=1) for idx in resample_indices(n, n_resamples, seed)])
    return _percentile_interval(stats, confidence)


def mean_with_ci(
    values: Sequence[float] | np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float | None, float | None]:
    """(mean, ci_low, ci_high) of per-unit values (percentile bootstrap over units)."""
    v = _as_1d(values, "values")
    if v.size == 0:
        raise ValueError("mean_with_ci needs at least one value")
    lo, hi = bootstrap_ci(v, n_resamples, confidence, seed)
    return float(v.mean()), lo, hi


def ratio_with_ci(
    numerators: Sequence[float] | np.ndarray,
    denominators: Sequence[float] | np.ndarray,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> tuple[float, float | None, float | None]:
    """sum(num) / sum(den) with a bootstrap CI over units (cluster bootstrap).

    Used for pooled shares such as "fraction of generations above a threshold" when the
    units (prompts) are resampled: unit i contributes ``numerators[i]`` hits out of
    ``denominators[i]`` generations.
    """
    num = _as_1d(numerators, "numerators")
    den = _as_1d(denominators, "denominators")
    if num.shape != den.shape or num.size == 0:
        raise ValueError("numerators and denominators must be non-empty and of equal length")
    if den.sum() <= 0:
        raise ValueError("denominators must sum to a positive number")
    value = float(num.sum() / den.sum())
    if num.size < 2:
        return value, None, None
    nums, dens = [], []
    for idx in resample_indices(num.size, n_resamples, seed):
        nums.append(num[idx].sum(axis=1))
        dens.append(den[idx].sum(axis=1))
    n_s, d = np.concatenate(nums), np.concatenate(dens)
    stats = n_s[d > 0] / d[d > 0]
    lo, hi = _percentile_interval(stats, confidence)
    return value, lo, hi


def _comparison_matrix(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """C[i, j] = 1 if pos_i > neg_j, 0.5 if equal, 0 otherwise."""
    return (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])


def auroc(scores_pos, scores_neg) -> float:
    """Area under the ROC curve: P(score_pos > score_neg) + 0.5 P(equal).

    The Mann-Whitney U statistic from mid-ranks, so ties count one half; higher scores
    are taken to mean "positive".
    """
    pos = _as_1d(scores_pos, "scores_pos")
    neg = _as_1d(scores_neg, "scores_neg")
    if pos.size == 0 or neg.size == 0:
        raise ValueError("auroc needs at least one positive and one negative score")
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks for ties
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def _group_index(groups, n: int) -> np.ndarray:
    if groups is None:
        return np.arange(n)
    g = np.asarray(groups)
    if g.shape != (n,):
        raise ValueError("groups must have one label per score")
    _, inv = np.unique(g, return_inverse=True)
    return inv


def auroc_with_ci(
    scores_pos,
    scores_neg,
    pos_groups=None,
    neg_groups=None,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
    max_pairs: int = 10_000_000,
) -> tuple[float, float | None, float | None]:
    """AUROC with a two-sample cluster bootstrap CI.

    ``pos_groups``/``neg_groups`` label the unit (e.g. prompt) of each score; units are
    resampled on each side independently and all their scores follow them. Without
    groups each score is its own unit. The CI is ``(None, None)`` with fewer than 2 units
    on a side or more than ``max_pairs`` score pairs (memory). Vectorised: each resample's AUROC is a weighted
    sum of the pairwise comparison matrix.
    """
    pos = _as_1d(scores_pos, "scores_pos")
    neg = _as_1d(scores_neg, "scores_neg")
    value = auroc(pos, neg)
    gp = _group_index(pos_groups, pos.size)
    gn = _group_index(neg_groups, neg.size)
    n_gp, n_gn = int(gp.max()) + 1, int(gn.max()) + 1
    if n_gp < 2 or n_gn < 2 or pos.size * neg.size > max_pairs:
        return value, None, None
    c = _comparison_matrix(pos, neg)
    onehot_p = np.eye(n_gp)[gp]  # (n_pos, n_gp)
    onehot_n = np.eye(n_gn)[gn]  # (n_neg, n_gn)
    s2 = onehot_p.T @ c @ onehot_n  # summed comparisons between pos unit a and neg unit b
    cnt_p = onehot_p.sum(axis=0)
    cnt_n = onehot_n.sum(axis=0)
    wp = resample_counts(n_gp, n_resamples, seed)
    wn = resample_counts(n_gn, n_resamples, seed + 1)
    num = ((wp @ s2) * wn).sum(axis=1)
    den = (wp @ cnt_p) * (wn @ cnt_n)
    lo, hi = _percentile_interval(num / den, confidence)
    return value, lo, hi


def tpr_at_fpr(scores_pos, scores_neg, fpr: float = 0.01) -> float:
    """True-positive rate at the strictest threshold whose false-positive rate <= ``fpr``.

    A score is called positive when it is strictly greater than the threshold ``t``; ``t``
    is the smallest value with ``mean(neg > t) <= fpr`` (the k-th largest negative,
    k = floor(fpr * n_neg) + 1), so ties at the threshold never count as detections.
    """
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    pos = _as_1d(scores_pos, "scores_pos")
    neg = _as_1d(scores_neg, "scores_neg")
    if pos.size == 0 or neg.size == 0:
        raise ValueError("tpr_at_fpr needs at least one positive and one negative score")
    k = int(np.floor(fpr * neg.size + 1e-9)) + 1
    if k > neg.size:
        return 1.0
    t = np.sort(neg)[::-1][k - 1]
    return float(np.mean(pos > t))


__all__ = [
    "bootstrap_ci",
    "mean_with_ci",
    "ratio_with_ci",
    "auroc",
    "auroc_with_ci",
    "tpr_at_fpr",
    "resample_counts",
    "resample_indices",
]
