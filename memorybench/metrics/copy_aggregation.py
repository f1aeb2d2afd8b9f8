"""The papers' four ways of turning SSCD similarities to ground truth into one number.

Input per prompt: the (generations x ground-truth images) matrix of SSCD cosines. Output
columns, for all prompts and for each label (``_vm``, ``_tm``) when prompts carry one
(``P`` = the prompt set's short name, e.g. ``mem``):

=======================  ==============================================================  ===============
column                   definition                                                      used by
=======================  ==============================================================  ===============
``sscd_P``               mean over prompts of the per-prompt max over generations x GTs  MemBench
``sscd_pergen_P``        mean over generations of the per-generation max over GTs        Wen et al., DCR
``copy_rate_P``          share of generations whose max over GTs is > ``threshold``      MemBench, DCR
``sscd_median_P``        median over prompts of the per-prompt max (MAD in protocol)     NeMo (VM/TM)
=======================  ==============================================================  ===============

CIs: 95% percentile bootstrap over prompts (generations of a prompt move together), 2000
resamples, seed 0, like every memorybench metric. MAD is the unscaled median absolute
deviation, as NeMo reports it.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from memorybench.metrics.base import MetricValue
from memorybench.metrics.stats import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    mean_with_ci,
    ratio_with_ci,
    resample_indices,
)

DEFAULT_COPY_THRESHOLD = 0.5


def median_with_ci(values, n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED,
                   confidence: float = 0.95) -> tuple[float, float | None, float | None]:
    """(median, ci_low, ci_high): percentile bootstrap of the median over units."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("median_with_ci needs at least one value")
    if v.size < 2:
        return float(np.median(v)), None, None
    stats = np.concatenate([np.median(v[idx], axis=1) for idx in resample_indices(v.size, n_resamples, seed)])
    alpha = 1.0 - confidence
    lo, hi = np.quantile(stats, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(np.median(v)), float(lo), float(hi)


def mad(values) -> float:
    """Unscaled median absolute deviation."""
    v = np.asarray(values, dtype=np.float64).ravel()
    return float(np.median(np.abs(v - np.median(v))))


def _check(sims: Sequence[np.ndarray]) -> list[np.ndarray]:
    out = []
    for i, s in enumerate(sims):
        a = np.asarray(s, dtype=np.float64)
        if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
            raise ValueError(f"prompt {i}: similarities must be (generations, ground truths), got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"prompt {i}: similarities contain non-finite values")
        out.append(a)
    if not out:
        raise ValueError("copy aggregation needs at least one prompt")
    return out


def aggregate_split(sims: Sequence[np.ndarray], threshold: float = DEFAULT_COPY_THRESHOLD,
                    n_resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """The four aggregations of one group of prompts: ``{name: (value, lo, hi)}`` plus
    ``mad`` and the per-prompt maxima."""
    mats = _check(sims)
    per_gen = [m.max(axis=1) for m in mats]  # max over ground truths, per generation
    per_prompt = np.array([g.max() for g in per_gen])  # max over generations x ground truths
    sizes = np.array([g.size for g in per_gen], dtype=np.float64)
    kw = {"n_resamples": n_resamples, "seed": seed}
    return {
        "sscd": mean_with_ci(per_prompt, **kw),
        "sscd_pergen": ratio_with_ci(np.array([g.sum() for g in per_gen]), sizes, **kw),
        "copy_rate": ratio_with_ci(np.array([(g > threshold).sum() for g in per_gen], dtype=np.float64), sizes, **kw),
        "sscd_median": median_with_ci(per_prompt, **kw),
        "mad": mad(per_prompt),
        "per_prompt_max": per_prompt,
        "n_generations": int(sizes.sum()),
    }


_DEFINITIONS = {
    "sscd": "mean over prompts of the max over generations x ground truths",
    "sscd_pergen": "mean over generations of the max over ground truths",
    "copy_rate": "share of generations whose max over ground truths is > threshold",
    "sscd_median": "median over prompts of the max over generations x ground truths",
}


def copy_aggregations(
    sims: Sequence[np.ndarray],
    labels: Sequence[str | None] | None = None,
    set_short_name: str = "mem",
    threshold: float = DEFAULT_COPY_THRESHOLD,
    implementation: str = "sscd",
    protocol: dict[str, Any] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, MetricValue]:
    """Every aggregation column for all prompts and per label (see the module doc).

    ``sims[p]``: (generations, ground truths) SSCD cosines of prompt p; ``labels[p]``: its
    label (e.g. ``"VM"``) or None; labelled columns appear only for labels present.
    """
    mats = _check(sims)
    if labels is not None and len(labels) != len(mats):
        raise ValueError(f"{len(mats)} prompts but {len(labels)} labels")
    groups: dict[str, list[int]] = {"": list(range(len(mats)))}
    for i, label in enumerate(labels or []):
        if label is not None:
            groups.setdefault(f"_{label.lower()}", []).append(i)
    base = dict(protocol or {})
    base["bootstrap"] = {"unit": "prompt", "resamples": n_resamples, "seed": seed, "interval": "percentile 95%"}
    out: dict[str, MetricValue] = {}
    for suffix, idx in groups.items():
        agg = aggregate_split([mats[i] for i in idx], threshold, n_resamples, seed)
        split = {"split": suffix[1:].upper() or "all", "n_prompts": len(idx), "n_generations": agg["n_generations"]}
        for key, definition in _DEFINITIONS.items():
            value, lo, hi = agg[key]
            proto = {**base, **split, "aggregation": definition}
            if key == "copy_rate":
                proto["threshold"] = float(threshold)
            if key == "sscd_median":
                proto["mad"] = agg["mad"]
                proto["mad_definition"] = "median |x - median(x)| over prompts, unscaled"
            out[f"{key}_{set_short_name}{suffix}"] = MetricValue(
                value=float(value), n=len(idx), ci_low=lo, ci_high=hi, higher_is_better=False,
                implementation=implementation, protocol=proto)
    return out


__all__ = ["copy_aggregations", "aggregate_split", "median_with_ci", "mad", "DEFAULT_COPY_THRESHOLD"]
