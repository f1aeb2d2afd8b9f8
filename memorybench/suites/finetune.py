"""A suite's fine-tune: the recipe (typed, from the suite's ``finetune_*`` options) and the
fine-tuning set a data source provides.

A suite whose options hold a recipe fine-tunes the base model on its fine-tuning set before
any image is generated, for every method (the loop is :mod:`memorybench.run.finetune`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from memorybench.core.config import config_from_dict, config_to_dict
from memorybench.errors import ConfigError

OPTION_PREFIX = "finetune_"  # suite options finetune_<field> make the recipe
SOURCE_OPTIONS = ("finetune_source",)  # finetune_* options that choose data, not training
TRAIN_CHOICES = ("unet", "unet-attention", "unet-linear")


@dataclass(frozen=True)
class FinetuneRecipe:
    """How the suite fine-tunes the base model (AdamW, warmup then cosine decay)."""

    steps: int = 600
    batch: int = 32
    lr: float = 1e-3
    warmup: int = 20
    train: str = "unet"  # unet (all UNet weights) | unet-attention (transformer blocks) | unet-linear (nn.Linear only)
    caption_dropout: float = 0.1  # share of captions replaced by "" (keeps CFG's unconditional branch trained)
    weight_decay: float = 0.0
    grad_clip: float = 1.0  # max global gradient norm (0 = off)
    ema: float = 0.0  # decay of the weights' moving average used as the result (0 = the last weights)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.batch < 1 or self.warmup < 0:
            raise ValueError("steps and warmup must be >= 0 and batch >= 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.train not in TRAIN_CHOICES:
            raise ValueError(f"train must be one of {', '.join(TRAIN_CHOICES)}, got {self.train!r}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")

    @classmethod
    def from_options(cls, options: dict[str, Any], owner: str = "suite") -> "FinetuneRecipe | None":
        """The recipe in a suite's ``finetune_*`` options, or None when it has none.

        Every ``finetune_*`` option but the data-source ones must be a recipe field, so a
        misspelt key is an error naming it, never a silent default; a recipe must say how
        many steps it trains (``finetune_steps``, 0 measures the base model)."""
        values = {k[len(OPTION_PREFIX):]: v for k, v in options.items()
                  if k.startswith(OPTION_PREFIX) and k not in SOURCE_OPTIONS}
        if not values:
            return None
        recipe = config_from_dict(cls, values, owner=f"{owner}: fine-tune recipe (options {OPTION_PREFIX}*)")
        if "steps" not in values:
            raise ConfigError(f"{owner}: a fine-tune recipe needs {OPTION_PREFIX}steps")
        return recipe

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


@dataclass
class FinetuneSet:
    """A fine-tuning set: unique images, their captions and how often each is repeated."""

    images: np.ndarray  # (N, H, W, 3) uint8, at the sampler's resolution
    captions: list[str]
    dup_counts: np.ndarray  # (N,) int: copies of each image in the set
    protected: np.ndarray  # (P,) indices of the images a training-time method must not learn
    sha256: str  # identity of the set (images, captions, counts, protected indices)
    description: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.captions)
        if self.images.ndim != 4 or self.images.shape[0] != n or self.images.dtype != np.uint8:
            raise ValueError("FinetuneSet.images must be uint8 (N, H, W, 3), one per caption")
        if np.asarray(self.dup_counts).shape != (n,) or np.min(self.dup_counts) < 1:
            raise ValueError("FinetuneSet.dup_counts needs one count >= 1 per image")
        p = np.asarray(self.protected, dtype=np.int64)
        if p.size == 0 or p.min() < 0 or p.max() >= n:
            raise ValueError("FinetuneSet.protected must index at least one image of the set")
        self.protected = p

    @property
    def protected_images(self) -> np.ndarray:
        return self.images[self.protected]

    @property
    def protected_captions(self) -> list[str]:
        return [self.captions[int(i)] for i in self.protected]
