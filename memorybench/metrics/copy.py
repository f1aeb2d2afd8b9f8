"""The tiny world's copy summary: how much do generations copy their training images?

Pure functions: arrays in, :class:`MetricValue` out. The runner generates the images,
caches the training-set SSCD embeddings (made with the *same* embedder) and calls
:func:`copy_summary` (or :func:`copy_summary_from_embeddings` when it already holds the
generations' embeddings).

Columns (exact names; units for the bootstrap CI are prompts, 2000 resamples, seed 0):

==================  ========================================================  ==========
name                definition                                                better
==================  ========================================================  ==========
``sscd_mem``        mean over memorized prompts of max over seeds of SSCD     lower
                    to the prompt's source training image
``copy_rate_mem``   share of memorized-prompt generations with SSCD to the    lower
                    source > the calibrated threshold
``retrieval_mem``   share of memorized-prompt generations whose nearest       lower
                    training image (SSCD, faiss) is the source
``sscd_gen``        mean over held-out general prompts of max over seeds of   lower
                    SSCD to the nearest training image
``diversity_mem``   mean over memorized prompts of the mean pairwise SSCD     lower
                    across seeds (higher = less diverse)
``diversity_gen``   same for general prompts                                  lower
``clip_mem``        mean over memorized prompts of the mean CLIP cosine of    higher
                    each generation with its caption
``clip_gen``        same for general prompts                                  higher
``tiled_l2_mem``    mean over memorized-prompt generations of the tiled L2    higher
                    distance (Carlini et al.; [0, 1] RMS scale) to the
                    source image (a distance: larger = further from a copy)
``auroc_copy``      AUROC of per-generation max SSCD to the nearest training  higher
                    image, memorized-prompt vs general-prompt generations
==================  ========================================================  ==========

Calibration (:func:`calibrate_copy_threshold`): two floors are measured, SSCD between
unrelated training images and SSCD between general-prompt generations and their nearest
training image; the copy threshold is ``max(0.5, p99 of the first, p99 of the second)``:
the field's 0.5, raised when 1% of non-copies would already clear it.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np

from memorybench.metrics.base import MetricValue
from memorybench.metrics.diversity import diversity_ragged
from memorybench.metrics.retrieval import EmbeddingIndex
from memorybench.metrics.stats import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    auroc_with_ci,
    mean_with_ci,
    ratio_with_ci,
)
from memorybench.metrics.tiled_l2 import DEFAULT_GRID, tiled_l2_paired

DEFAULT_MIN_THRESHOLD = 0.5
DEFAULT_QUANTILE = 0.99


# ---------------------------------------------------------------------------------------
# calibration


def _floor_stats(x: np.ndarray, q: float) -> dict[str, float]:
    return {"mean": float(x.mean()), f"p{round(q * 100):d}": float(np.quantile(x, q)), "max": float(x.max()), "n": int(x.size)}


def calibrate_copy_threshold(
    train_embeddings: np.ndarray,
    general_gen_nearest_sims: np.ndarray,
    train_ids: np.ndarray | None = None,
    min_threshold: float = DEFAULT_MIN_THRESHOLD,
    quantile: float = DEFAULT_QUANTILE,
    max_pairs: int = 500_000,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Floors of SSCD between non-copies and the copy threshold derived from them.

    ``train_embeddings``: (T, D) L2-normalised SSCD embeddings of the training images
    (pass unique images, or ``train_ids`` so pairs of the same image are skipped).
    ``general_gen_nearest_sims``: per general-prompt generation, SSCD to its nearest
    training image. All pairs of training images are used when there are at most
    ``max_pairs``, otherwise that many random pairs (seeded).

    Returns ``{"train_pairs": {mean, p99, max, n}, "general_nearest": {mean, p99, max, n},
    "threshold": float, "rule": str}``.
    """
    e = np.asarray(train_embeddings, dtype=np.float32)
    if e.ndim != 2 or e.shape[0] < 2:
        raise ValueError("calibration needs at least 2 training embeddings (T, D)")
    t = e.shape[0]
    ids = np.arange(t) if train_ids is None else np.asarray(train_ids)
    n_all = t * (t - 1) // 2
    if n_all <= max_pairs:
        i, j = np.triu_indices(t, 1)
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, t, size=max_pairs)
        j = rng.integers(0, t, size=max_pairs)
    keep = ids[i] != ids[j]
    i, j = i[keep], j[keep]
    if i.size == 0:
        raise ValueError("no pair of distinct training images to calibrate on")
    train_sims = np.einsum("nd,nd->n", e[i], e[j])
    gen = np.asarray(general_gen_nearest_sims, dtype=np.float64).ravel()
    if gen.size == 0:
        raise ValueError("calibration needs general-prompt generations")
    f_train = _floor_stats(train_sims, quantile)
    f_gen = _floor_stats(gen, quantile)
    key = f"p{round(quantile * 100):d}"
    thr = max(min_threshold, f_train[key], f_gen[key])
    return {
        "train_pairs": f_train,
        "general_nearest": f_gen,
        "threshold": float(thr),
        "rule": f"max({min_threshold}, {key} of SSCD between distinct training images, "
        f"{key} of SSCD of general generations to their nearest training image)",
    }


# ---------------------------------------------------------------------------------------
# helpers


def _as_groups(images, name: str) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.ndim != 5:
            raise ValueError(f"{name} must be (P, S, H, W, 3) or a list of (S, H, W, 3) arrays")
        groups = list(images)
    else:
        groups = [np.asarray(g) for g in images]
    for g in groups:
        if g.ndim != 4 or g.shape[-1] != 3 or g.dtype != np.uint8:
            raise ValueError(f"{name}: each prompt's generations must be uint8 (S, H, W, 3), got {g.dtype} {g.shape}")
    return groups


def _split(flat: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    return np.split(flat, np.cumsum(sizes)[:-1])


def _mv(value_lo_hi, n: int, higher: bool, impl: str, protocol: dict) -> MetricValue:
    v, lo, hi = value_lo_hi
    return MetricValue(value=float(v), n=int(n), ci_low=lo, ci_high=hi, higher_is_better=higher,
                       implementation=impl, protocol=protocol)


# ---------------------------------------------------------------------------------------
# summary


def copy_summary_from_embeddings(
    mem_embeddings: Sequence[np.ndarray],
    mem_source_index: Sequence[int],
    gen_embeddings: Sequence[np.ndarray],
    train_embeddings: np.ndarray,
    threshold: float,
    train_ids: np.ndarray | None = None,
    mem_clip: Sequence[np.ndarray] | None = None,
    gen_clip: Sequence[np.ndarray] | None = None,
    mem_tiled_l2: Sequence[np.ndarray] | None = None,
    tiled_l2_grid: int = DEFAULT_GRID,
    implementation: str = "sscd",
    protocol: dict[str, Any] | None = None,
    clip_implementation: str = "clip",
    clip_protocol: dict[str, Any] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    mem_prompts: Sequence[str] | None = None,
    gen_prompts: Sequence[str] | None = None,
) -> dict[str, MetricValue]:
    """The copy columns from per-prompt SSCD embeddings (and optional CLIP / tiled L2).

    ``mem_embeddings[p]``: (S_p, D) embeddings of memorized prompt p's generations;
    ``mem_source_index[p]``: row of its source image in ``train_embeddings``;
    ``gen_embeddings[q]``: (S_q, D) for general prompt q. ``train_ids``: optional id per
    training row (duplicates share one); retrieval counts a hit when the nearest row has
    the source's id. ``mem_clip``/``gen_clip``: per-prompt arrays of per-generation CLIP
    cosines; ``mem_tiled_l2``: per-prompt arrays of per-generation tiled L2 to the source.
    Columns whose inputs are missing are left out. With ``mem_prompts``/``gen_prompts`` (one
    name per prompt) every per-prompt column also carries its value for each prompt.
    """
    train = np.asarray(train_embeddings, dtype=np.float32)
    mem = [np.asarray(m, dtype=np.float32) for m in mem_embeddings]
    gen = [np.asarray(g, dtype=np.float32) for g in gen_embeddings]
    src = np.asarray(mem_source_index, dtype=np.int64)
    if len(mem) == 0 or len(gen) == 0:
        raise ValueError("copy summary needs memorized and general prompts")
    if src.shape != (len(mem),):
        raise ValueError(f"{len(mem)} memorized prompts but {src.size} source indices")
    if src.min() < 0 or src.max() >= train.shape[0]:
        raise ValueError("a source index is outside the training embeddings")
    ids = np.arange(train.shape[0]) if train_ids is None else np.asarray(train_ids)
    if ids.shape != (train.shape[0],):
        raise ValueError("train_ids must have one id per training embedding")

    mem_sizes = [m.shape[0] for m in mem]
    gen_sizes = [g.shape[0] for g in gen]
    mem_flat = np.concatenate(mem)
    gen_flat = np.concatenate(gen)
    mem_prompt = np.repeat(np.arange(len(mem)), mem_sizes)
    gen_prompt = np.repeat(np.arange(len(gen)), gen_sizes)

    index = EmbeddingIndex(train)
    mem_nn_sim, mem_nn_idx = index.search(mem_flat, 1)
    gen_nn_sim, _ = index.search(gen_flat, 1)
    mem_nn_sim, mem_nn_idx, gen_nn_sim = mem_nn_sim[:, 0], mem_nn_idx[:, 0], gen_nn_sim[:, 0]
    src_sim = np.clip(np.einsum("nd,nd->n", mem_flat, train[src[mem_prompt]]), -1.0, 1.0)
    mem_nn_sim, gen_nn_sim = np.clip(mem_nn_sim, -1.0, 1.0), np.clip(gen_nn_sim, -1.0, 1.0)

    base = dict(protocol or {})
    base["bootstrap"] = {"unit": "prompt", "resamples": n_resamples, "seed": seed, "interval": "percentile 95%"}
    impl_nn = f"{implementation}+faiss-{index.kind}"
    kw = {"n_resamples": n_resamples, "seed": seed}
    out: dict[str, MetricValue] = {}
    per: dict[str, np.ndarray] = {}  # column -> value of each memorized or general prompt
    n_mem, n_gen = len(mem), len(gen)

    per["sscd_mem"] = np.array([s.max() for s in _split(src_sim, mem_sizes)])
    out["sscd_mem"] = _mv(mean_with_ci(per["sscd_mem"], **kw), n_mem, False, implementation,
                          {**base, "aggregation": "mean over prompts of max over seeds of SSCD to source"})

    hits = np.array([(s > threshold).sum() for s in _split(src_sim, mem_sizes)], dtype=np.float64)
    per["copy_rate_mem"] = hits / np.asarray(mem_sizes)
    out["copy_rate_mem"] = _mv(ratio_with_ci(hits, mem_sizes, **kw), n_mem, False, implementation,
                               {**base, "aggregation": "share of generations with SSCD to source > threshold",
                                "threshold": float(threshold)})

    ret_hit = (ids[mem_nn_idx] == ids[src[mem_prompt]]).astype(np.float64)
    ret_counts = np.array([r.sum() for r in _split(ret_hit, mem_sizes)])
    per["retrieval_mem"] = ret_counts / np.asarray(mem_sizes)
    out["retrieval_mem"] = _mv(ratio_with_ci(ret_counts, mem_sizes, **kw), n_mem, False, impl_nn,
                               {**base, "aggregation": "share of generations whose nearest training image is the source",
                                "n_train": int(train.shape[0])})

    per["sscd_gen"] = np.array([s.max() for s in _split(gen_nn_sim, gen_sizes)])
    out["sscd_gen"] = _mv(mean_with_ci(per["sscd_gen"], **kw), n_gen, False, impl_nn,
                          {**base, "aggregation": "mean over prompts of max over seeds of SSCD to nearest training image",
                           "n_train": int(train.shape[0])})

    if min(mem_sizes) >= 2:
        per["diversity_mem"] = diversity_ragged(mem)
        out["diversity_mem"] = _mv(mean_with_ci(per["diversity_mem"], **kw), n_mem, False, implementation,
                                   {**base, "aggregation": "mean over prompts of mean pairwise SSCD across seeds (i != j)"})
    if min(gen_sizes) >= 2:
        per["diversity_gen"] = diversity_ragged(gen)
        out["diversity_gen"] = _mv(mean_with_ci(per["diversity_gen"], **kw), n_gen, False, implementation,
                                   {**base, "aggregation": "mean over prompts of mean pairwise SSCD across seeds (i != j)"})

    cbase = dict(clip_protocol or {})
    cbase["bootstrap"] = base["bootstrap"]
    if mem_clip is not None:
        per["clip_mem"] = np.array([np.mean(c) for c in mem_clip])
        out["clip_mem"] = _mv(mean_with_ci(per["clip_mem"], **kw), n_mem, True, clip_implementation,
                              {**cbase, "aggregation": "mean over prompts of mean CLIP cosine over seeds"})
    if gen_clip is not None:
        per["clip_gen"] = np.array([np.mean(c) for c in gen_clip])
        out["clip_gen"] = _mv(mean_with_ci(per["clip_gen"], **kw), n_gen, True, clip_implementation,
                              {**cbase, "aggregation": "mean over prompts of mean CLIP cosine over seeds"})

    if mem_tiled_l2 is not None:
        sums = np.array([np.sum(d) for d in mem_tiled_l2])
        cnts = np.array([np.size(d) for d in mem_tiled_l2])
        per["tiled_l2_mem"] = sums / cnts
        out["tiled_l2_mem"] = _mv(ratio_with_ci(sums, cnts, **kw), n_mem, True,
                                  f"tiled-l2/grid{tiled_l2_grid}x{tiled_l2_grid}/rms01",
                                  {"aggregation": "mean over generations of tiled L2 to source",
                                   "grid": tiled_l2_grid, "scale": "max over tiles of per-tile RMS on [0,1] pixels",
                                   "bootstrap": base["bootstrap"]})

    out["auroc_copy"] = _mv(
        auroc_with_ci(mem_nn_sim, gen_nn_sim, mem_prompt, gen_prompt, **kw), n_mem + n_gen, True, impl_nn,
        {**base, "aggregation": "AUROC of per-generation SSCD to nearest training image, memorized vs general",
         "n_pos": int(mem_nn_sim.size), "n_neg": int(gen_nn_sim.size)},
    )
    for column, values in per.items():
        names = mem_prompts if column.endswith("_mem") else gen_prompts
        # a repeated prompt name cannot key a per-prompt table, so such sets go without one
        if names is not None and len(set(names)) == len(names):
            if len(names) != len(values):
                raise ValueError(f"{len(names)} prompt names for {len(values)} prompts ({column})")
            out[column] = replace(out[column], per_prompt={str(k): float(v) for k, v in zip(names, values)})
    return out


def copy_summary(
    mem_images,
    mem_source_index: Sequence[int],
    mem_captions: Sequence[str],
    gen_images,
    gen_captions: Sequence[str],
    train_embeddings: np.ndarray,
    embedder,
    threshold: float,
    clip_scorer=None,
    mem_source_images: np.ndarray | None = None,
    train_ids: np.ndarray | None = None,
    grid: int = DEFAULT_GRID,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> dict[str, MetricValue]:
    """All copy columns from the generated images.

    ``mem_images``: per memorized prompt, uint8 (S, H, W, 3) generations (a list, or a
    (P, S, H, W, 3) array); ``mem_source_index[p]``: row of its source in
    ``train_embeddings`` (made with ``embedder``); ``mem_captions[p]``: its prompt.
    ``gen_images``/``gen_captions``: the same for held-out general prompts.
    ``embedder``: an :class:`~memorybench.metrics.sscd.SSCDEmbedder` (anything with
    ``embed`` and ``implementation``); ``clip_scorer``: a
    :class:`~memorybench.metrics.clip.ClipScorer` (CLIP columns are left out
    without it); ``mem_source_images``: uint8 (P, H, W, 3) source images for
    ``tiled_l2_mem`` (left out without them); ``threshold``: from
    :func:`calibrate_copy_threshold`.
    """
    mem_groups = _as_groups(mem_images, "mem_images")
    gen_groups = _as_groups(gen_images, "gen_images")
    if len(mem_captions) != len(mem_groups) or len(gen_captions) != len(gen_groups):
        raise ValueError("one caption per prompt is required")
    mem_sizes = [g.shape[0] for g in mem_groups]
    gen_sizes = [g.shape[0] for g in gen_groups]
    mem_emb = _split(embedder.embed(np.concatenate(mem_groups)), mem_sizes)
    gen_emb = _split(embedder.embed(np.concatenate(gen_groups)), gen_sizes)

    mem_clip = gen_clip = None
    clip_impl, clip_proto = "clip", None
    if clip_scorer is not None:
        caps = [c for c, s in zip(mem_captions, mem_sizes) for _ in range(s)]
        mem_clip = _split(clip_scorer.score(np.concatenate(mem_groups), caps), mem_sizes)
        caps = [c for c, s in zip(gen_captions, gen_sizes) for _ in range(s)]
        gen_clip = _split(clip_scorer.score(np.concatenate(gen_groups), caps), gen_sizes)
        clip_impl = getattr(clip_scorer, "implementation", "clip")
        clip_proto = clip_scorer.protocol_dict() if hasattr(clip_scorer, "protocol_dict") else None

    mem_tl2 = None
    if mem_source_images is not None:
        srcs = np.asarray(mem_source_images)
        if srcs.shape[0] != len(mem_groups):
            raise ValueError("mem_source_images needs one source image per memorized prompt")
        mem_tl2 = []
        for g, s in zip(mem_groups, srcs):
            if g.shape[1:] != s.shape:
                raise ValueError(f"generation size {g.shape[1:]} differs from source size {s.shape}")
            mem_tl2.append(tiled_l2_paired(g, np.broadcast_to(s, g.shape), grid=grid))

    proto = embedder.protocol_dict() if hasattr(embedder, "protocol_dict") else {}
    return copy_summary_from_embeddings(
        mem_emb, mem_source_index, gen_emb, train_embeddings, threshold,
        train_ids=train_ids, mem_clip=mem_clip, gen_clip=gen_clip, mem_tiled_l2=mem_tl2, tiled_l2_grid=grid,
        implementation=getattr(embedder, "implementation", "sscd"), protocol={"sscd": proto},
        clip_implementation=clip_impl, clip_protocol=clip_proto,
        n_resamples=n_resamples, seed=seed, mem_prompts=mem_captions, gen_prompts=gen_captions,
    )


def nearest_train_sims(query_embeddings: np.ndarray, train_embeddings: np.ndarray) -> np.ndarray:
    """Per query, SSCD (cosine) to its nearest training embedding, (N,)."""
    sims, _ = EmbeddingIndex(train_embeddings).search(query_embeddings, 1)
    return sims[:, 0]


__all__ = ["copy_summary", "copy_summary_from_embeddings", "calibrate_copy_threshold", "nearest_train_sims"]
