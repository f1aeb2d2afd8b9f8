"""``tinyworld-copy``: the copy, diversity and CLIP columns of suite tinyworld-v1.

The copy threshold is calibrated on floors that do not depend on the method under test
(SSCD between distinct training images, and between never-trained real images of the
held-out captions and their nearest training image), so every method is judged against
the same threshold. The general generations' own floor is recorded beside them.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np

from memorybench.api.metric import Metric, RunView
from memorybench.core.io import read_checked, write_checked
from memorybench.metrics.base import MetricValue
from memorybench.metrics.copy import calibrate_copy_threshold, copy_summary, nearest_train_sims
from memorybench.metrics.sscd import SSCDEmbedder
from memorybench.api.metric import register_metric


def cached_embeddings(embedder: SSCDEmbedder, images: np.ndarray, data_sha256: str, cache_dir: Path | None) -> np.ndarray:
    """SSCD embeddings of a fixed image set, cached by (data hash, embedder implementation)."""
    if cache_dir is None:
        return embedder.embed(images)
    key = hashlib.sha256(f"{data_sha256}|{embedder.implementation}".encode()).hexdigest()[:32]
    path = Path(cache_dir) / "embeddings" / f"{key}.npy"
    data = read_checked(path, "SSCD embeddings")  # checked against the sha256 kept beside it
    if data is not None:
        emb = np.load(io.BytesIO(data), allow_pickle=False)
        if emb.shape[0] == len(images):
            return emb
    emb = embedder.embed(images)
    buf = io.BytesIO()
    np.save(buf, emb, allow_pickle=False)
    write_checked(path, buf.getvalue())
    return emb


def tiny_clip_scorer():
    from memorybench.metrics.clip import ClipScorer
    from memorybench.tinyworld import world_path
    from memorybench.tinyworld.clip import load_tiny_clip

    model, tokenize, info = load_tiny_clip(world_path() / "clip")
    return ClipScorer(model, tokenize, image_size=info["image_size"], mean=info["mean"], std=info["std"],
                      name="tinyworld-clip")


@register_metric()
class TinyWorldCopy(Metric):
    name = "tinyworld-copy"
    description = "SSCD copy/retrieval/diversity, tiled L2 and tiny-CLIP score against the tiny world's training set"

    def compute(self, run: RunView) -> dict[str, MetricValue]:
        source_index = run.data.training.index
        # suites that train further (finetune-dup-v1) search the world's and their own images
        train_images = run.data.training.images
        train_sha256 = run.data.training.sha256
        embedder = SSCDEmbedder("default", progress=run.progress)
        train_emb = cached_embeddings(embedder, train_images, train_sha256, run.cache_dir)

        real = run.data.heldout_images
        real_prompts = list(real)
        real_emb = embedder.embed(np.stack([real[p] for p in real_prompts]))
        calibration = calibrate_copy_threshold(train_emb, nearest_train_sims(real_emb, train_emb))

        mem_prompts, mem_images = run.stacked("memorized")
        gen_prompts, gen_images = run.stacked("general")
        src = [source_index[p] for p in mem_prompts]
        scorer = tiny_clip_scorer()
        out = copy_summary(
            mem_images, src, mem_prompts, gen_images, gen_prompts, train_emb, embedder,
            threshold=calibration["threshold"], clip_scorer=scorer,
            mem_source_images=train_images[src],
        )
        gen_emb = embedder.embed(gen_images.reshape(-1, *gen_images.shape[2:]))
        gen_floor = nearest_train_sims(gen_emb, train_emb)
        calibration["general_generations_nearest"] = {
            "mean": float(gen_floor.mean()), "p99": float(np.quantile(gen_floor, 0.99)),
            "max": float(gen_floor.max()), "n": int(gen_floor.size)}
        calibration["floors_for_threshold"] = "train_pairs and general_nearest (real held-out images), method-independent"
        # CLIP score of real training pairs: the ceiling clip_gen is read against
        real_clip = scorer.score(np.stack([real[p] for p in real_prompts]), real_prompts)
        calibration["clip_real_heldout_pairs"] = float(np.mean(real_clip))
        run.calibration["copy"] = calibration
        return out
