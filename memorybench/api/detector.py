"""The detector plugin API.

A memorization detector scores prompts before (or at the very start of) generation:
higher = more memorized. It is a ``Detector`` subclass with a name, a dataclass ``Config``
and two methods:

- ``score(pipe, prompts, settings)`` returns one score per prompt (plus any named
  per-prompt components it wants reported);
- ``unet_calls_per_prompt(settings)`` says what it costs, counted as UNet evaluations of
  one latent under one text condition (a CFG step of one image is 2).

Detectors must not change the pipeline: no weight edits, and any attention processor
they install is removed again (``capture_processors`` does both for them).
``memorybench detect`` measures AUROC and TPR at 1% FPR of a detector on a suite.

:func:`memorybench.model.trajectory.early_trajectory` is the shared building block: it
runs the first denoising steps of the suite's sampler with classifier-free guidance for
every (prompt, seed) and hands each step's latents and both noise predictions to the
detector.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from memorybench.api.builtins import BUILTIN_DETECTORS
from memorybench.api.registry import Registry
from memorybench.core.config import ConfiguredPlugin
from memorybench.model.sampling import seed_range
from memorybench.model.trajectory import early_trajectory

if TYPE_CHECKING:
    from memorybench.model.pipeline import PipelineAdapter, SamplerSettings


@dataclass
class DetectionScores:
    """Per-prompt detector output, in the order of the prompts scored."""

    scores: np.ndarray  # (n,), higher = more memorized
    components: dict[str, np.ndarray] = field(default_factory=dict)  # other (n,) figures, reported

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64).ravel()
        self.components = {k: np.asarray(v, dtype=np.float64).ravel() for k, v in self.components.items()}
        bad = [k for k, v in self.components.items() if v.shape != self.scores.shape]
        if bad:
            raise ValueError(f"components {bad} do not have one value per prompt")

    @staticmethod
    def concat(parts: list["DetectionScores"]) -> "DetectionScores":
        if not parts:
            return DetectionScores(np.zeros(0))
        keys = parts[0].components.keys()
        return DetectionScores(np.concatenate([p.scores for p in parts]),
                               {k: np.concatenate([p.components[k] for p in parts]) for k in keys})


class Detector(ConfiguredPlugin):
    """Base class of memorization detectors. Subclass, set the class attributes, register."""

    plugin_kind: ClassVar[str] = "detector"
    description: ClassVar[str] = ""

    def score(self, pipe: "PipelineAdapter", prompts: list[str], settings: "SamplerSettings") -> DetectionScores:
        """Scores for ``prompts`` (higher = more memorized) under the suite's sampler."""
        raise NotImplementedError(f"detector '{self.name}' does not implement score()")

    def unet_calls_per_prompt(self, settings: "SamplerSettings") -> int:
        """UNet evaluations (one latent, one text condition) that ``score`` spends per prompt."""
        raise NotImplementedError(f"detector '{self.name}' does not implement unet_calls_per_prompt()")


@dataclass
class TrajectoryConfig:
    """What every trajectory detector's config holds (subclass it to add fields or change defaults)."""

    steps: int = 1  # k: read the first k denoising steps
    seeds: int = 4  # initial noises (images) per prompt
    seed_offset: int = 0  # seeds are seed_offset .. seed_offset + seeds - 1

    def __post_init__(self) -> None:
        if self.steps < 1 or self.seeds < 1:
            raise ValueError("steps and seeds must be >= 1")


class TrajectoryDetector(Detector):
    """A detector that reads the first denoising steps of every (prompt, seed).

    Its ``Config`` is a :class:`TrajectoryConfig` (``steps``, ``seeds``, ``seed_offset``);
    ``trajectory`` runs those steps through
    :func:`memorybench.model.trajectory.early_trajectory`, and the cost is two UNet
    evaluations (both CFG halves) per step and seed."""

    def trajectory(self, pipe: "PipelineAdapter", prompts: list[str], settings: "SamplerSettings"):
        cfg = self.config
        return early_trajectory(pipe, prompts, seed_range(cfg.seeds, cfg.seed_offset), settings, cfg.steps)

    def unet_calls_per_prompt(self, settings: "SamplerSettings") -> int:
        return 2 * self.config.steps * self.config.seeds


def check_detector_class(cls: Any) -> None:
    """Reject a malformed detector class at registration, naming the problem."""
    if not (isinstance(cls, type) and issubclass(cls, Detector)):
        raise TypeError(f"{cls!r} is not a memorybench Detector subclass")
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    if not dataclasses.is_dataclass(cls.Config):
        raise TypeError(f"detector '{cls.name}': Config must be a dataclass")
    for hook in ("score", "unet_calls_per_prompt"):
        if getattr(cls, hook) is getattr(Detector, hook):
            raise TypeError(f"detector '{cls.name}' must implement {hook}()")


DETECTORS: Registry = Registry(kind="detector", group="memorybench.detectors", validator=check_detector_class,
                               builtins=BUILTIN_DETECTORS)
register_detector = DETECTORS.decorator
