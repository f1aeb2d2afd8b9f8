"""A tiny fine-tuning set shared by the fine-tune tests: two protected captions duplicated
``dup`` times among twelve general ones, on smooth random colour images."""

import numpy as np

from memorybench.suites.finetune import FinetuneSet

PROTECTED = ["a photo of a red cat", "a painting of a blue house"]
GENERAL = [f"a {c} {o} in the {p}" for c in ("green", "yellow", "black") for o in ("dog", "tree")
           for p in ("city", "night")]


def smooth_images(n: int, seed: int, size: int = 16) -> np.ndarray:
    """Smooth random colour images (learnable, unlike white noise)."""
    g = np.random.default_rng(seed)
    small = g.integers(0, 256, size=(n, 4, 4, 3)).astype(np.float64)
    big = np.repeat(np.repeat(small, size // 4, 1), size // 4, 2)
    return np.clip(big + g.normal(0, 8, big.shape), 0, 255).astype(np.uint8)


def tiny_set(dup: int = 20) -> FinetuneSet:
    images = np.concatenate([smooth_images(len(PROTECTED), 1), smooth_images(len(GENERAL), 2)])
    counts = np.array([dup] * len(PROTECTED) + [1] * len(GENERAL))
    return FinetuneSet(images=images, captions=PROTECTED + GENERAL, dup_counts=counts,
                       protected=np.arange(len(PROTECTED)), sha256=f"tiny-set-dup{dup}")
