"""Diversity of one prompt's generations across seeds: mean pairwise cosine similarity.

For a prompt with S >= 2 generations and L2-normalised embeddings e_1..e_S (SSCD by
default), diversity = mean over the S(S-1) ordered pairs i != j of e_i . e_j, i.e. the
diagonal (self-similarity, 1) is excluded. Higher means *less* diverse: 1 when every seed
gives the same image (the signature of a memorized prompt), near 0 for unrelated images.
"""

from __future__ import annotations

import numpy as np


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(norm == 0):
        raise ValueError("embeddings contain an all-zero vector")
    return x / norm


def pairwise_diversity(embeddings) -> np.ndarray:
    """Per-prompt mean pairwise cosine.

    ``embeddings``: (P, S, D) -- P prompts, S generations each -- or (S, D) for one prompt
    (then a 0-d array is returned). Vectorised over prompts: sum_{i != j} e_i.e_j =
    ||sum_i e_i||^2 - sum_i ||e_i||^2.
    """
    e = np.asarray(embeddings, dtype=np.float64)
    single = e.ndim == 2
    if single:
        e = e[None]
    if e.ndim != 3:
        raise ValueError(f"embeddings must be (P, S, D) or (S, D), got shape {e.shape}")
    s = e.shape[1]
    if s < 2:
        raise ValueError("diversity needs at least 2 generations per prompt")
    e = _normalise(e)
    total = e.sum(axis=1)
    off_diag = np.einsum("pd,pd->p", total, total) - s  # each ||e_i||^2 == 1
    out = off_diag / (s * (s - 1))
    return out[0] if single else out


def diversity_ragged(groups) -> np.ndarray:
    """Per-prompt diversity when prompts have different numbers of generations.

    ``groups``: a sequence of (S_p, D) arrays. Prompts are bucketed by S_p so each bucket
    is one vectorised call.
    """
    groups = [np.asarray(g) for g in groups]
    out = np.empty(len(groups), dtype=np.float64)
    by_size: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        by_size.setdefault(g.shape[0], []).append(i)
    for _, idx in by_size.items():
        out[idx] = pairwise_diversity(np.stack([groups[i] for i in idx]))
    return out


__all__ = ["pairwise_diversity", "diversity_ragged"]
