"""Nearest training image per generation in embedding (SSCD) space, with faiss.

Embeddings are L2-normalised (rows are re-normalised here to be safe), so the inner
product is the cosine similarity. Up to ``ivf_threshold`` (50,000) database vectors an
exact ``IndexFlatIP`` is used; above it an ``IndexIVFFlat`` (inner product, ``nlist`` about
4 sqrt(n) lists, ``nprobe`` 32 by default, k-means with faiss's fixed seed) which is
approximate but deterministic for a given database.
"""

from __future__ import annotations

import math

import numpy as np

from memorybench.metrics.sscd import available_cores

IVF_THRESHOLD = 50_000


def _prep(x, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"{name} must be (n, d) embeddings, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values")
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    if np.any(norm == 0):
        raise ValueError(f"{name} contains an all-zero embedding")
    return np.ascontiguousarray(a / norm, dtype=np.float32)


class EmbeddingIndex:
    """A faiss index over (L2-normalised) database embeddings, searched by cosine.

    ``EmbeddingIndex(train_emb).search(query_emb, k)`` -> ``(sims, idx)``, both (n_query, k):
    cosine similarities in decreasing order and the database row of each neighbour.
    """

    def __init__(
        self,
        embeddings,
        ivf_threshold: int = IVF_THRESHOLD,
        nlist: int | None = None,
        nprobe: int = 32,
        threads: int | None = None,
    ) -> None:
        import faiss

        faiss.omp_set_num_threads(threads or available_cores())
        db = _prep(embeddings, "index embeddings")
        self.ntotal, self.dim = db.shape
        if self.ntotal <= ivf_threshold:
            self.index = faiss.IndexFlatIP(self.dim)
            self.kind = "flat-ip"
        else:
            nlist = nlist or int(4 * math.sqrt(self.ntotal))
            quantizer = faiss.IndexFlatIP(self.dim)
            index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.train(db)
            index.nprobe = min(nprobe, nlist)
            self._quantizer = quantizer  # keep alive
            self.index = index
            self.kind = f"ivf{nlist}-flat-ip-nprobe{index.nprobe}"
        self.index.add(db)

    def search(self, query, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        q = _prep(query, "query embeddings")
        if q.shape[1] != self.dim:
            raise ValueError(f"query dim {q.shape[1]} != index dim {self.dim}")
        if not 1 <= k <= self.ntotal:
            raise ValueError(f"k must be in [1, {self.ntotal}], got {k}")
        sims, idx = self.index.search(q, k)
        return sims.astype(np.float32), idx.astype(np.int64)

    def __len__(self) -> int:
        return self.ntotal


def nearest(query_emb, index_emb, k: int = 1, **index_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest database rows per query by cosine: ``(sims, idx)``, each (n_query, k)."""
    return EmbeddingIndex(index_emb, **index_kwargs).search(query_emb, k)


__all__ = ["EmbeddingIndex", "nearest", "IVF_THRESHOLD"]
