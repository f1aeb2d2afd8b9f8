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

``early_trajectory`` is the shared building block: it runs the first denoising steps of
the suite's sampler with classifier-free guidance for every (prompt, seed) and hands each
step's latents and both noise predictions to the detector.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

import numpy as np
import torch

from .config import ConfiguredPlugin
from .errors import ConfigError

if TYPE_CHECKING:
    from .pipeline import PipelineAdapter, SamplerSettings


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


# -- shared machinery ---------------------------------------------------------------------
def clean_estimate(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """Tweedie's estimate of the clean latent: x0 = (x_t - sqrt(1 - a) eps) / sqrt(a)."""
    return (x_t - (1 - alpha_bar) ** 0.5 * eps) / alpha_bar ** 0.5


@dataclass
class StepRecord:
    """One early denoising step of a (prompts x seeds) batch, rows prompt-major."""

    step: int
    timestep: int
    alpha_bar: float  # cumulative alpha at this timestep
    latents: torch.Tensor  # x_t fed to the UNet (before the scheduler step)
    eps_uncond: torch.Tensor
    eps_cond: torch.Tensor
    eps_guided: torch.Tensor
    next_latents: torch.Tensor  # after the scheduler step
    next_alpha_bar: float  # cumulative alpha of the step the scheduler moved to


def seed_list(n_seeds: int, seed_offset: int = 0) -> list[int]:
    return list(range(seed_offset, seed_offset + n_seeds))


@torch.no_grad()
def early_trajectory(pipe: "PipelineAdapter", prompts: list[str], seeds: list[int],
                     settings: "SamplerSettings", steps: int) -> Iterator[StepRecord]:
    """The first ``steps`` CFG denoising steps for every (prompt, seed), rows prompt-major.

    The same seeds (hence the same initial noise) serve every prompt, so scores of
    different prompts differ only through the prompt. ``pipe.state`` is set as in
    ``PipelineAdapter.sample_latents``, so attention processors see the step index and
    which half of the batch is conditional.
    """
    if steps < 1 or steps > settings.steps:
        raise ConfigError(f"steps must be in [1, {settings.steps}] (the suite's sampler steps), got {steps}")
    scheduler = pipe.make_scheduler(settings.sampler)
    scheduler.set_timesteps(settings.steps, device=pipe.device)
    rows_prompts = [p for p in prompts for _ in seeds]
    rows_seeds = [s for _ in prompts for s in seeds]
    latents = pipe.initial_latents(rows_seeds, settings, scheduler)
    cond = pipe.encode_prompts(rows_prompts)
    uncond = pipe.encode_prompts([""] * len(rows_prompts))
    alphas = scheduler.alphas_cumprod
    state = pipe.state
    state.num_steps, state.batch_size, state.cfg = settings.steps, len(rows_prompts), True
    timesteps = list(scheduler.timesteps)
    try:
        for i, t in enumerate(timesteps[:steps]):
            state.step_index, state.timestep = i, int(t)
            model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
            out = pipe.unet(model_in, t, encoder_hidden_states=torch.cat([uncond, cond])).sample
            out_u, out_c = out.chunk(2)
            out_g = out_u + settings.guidance * (out_c - out_u)
            nxt = scheduler.step(out_g, t, latents).prev_sample
            # detectors read noise predictions, whatever the UNet regresses
            x_in = model_in[: latents.shape[0]]
            eps_u, eps_c, eps_g = (pipe.to_epsilon(o, x_in, t, scheduler) for o in (out_u, out_c, out_g))
            t_next = int(timesteps[i + 1]) if i + 1 < len(timesteps) else -1
            yield StepRecord(
                step=i, timestep=int(t), alpha_bar=float(alphas[int(t)]), latents=latents,
                eps_uncond=eps_u, eps_cond=eps_c, eps_guided=eps_g, next_latents=nxt,
                next_alpha_bar=float(alphas[t_next]) if t_next >= 0 else 1.0,
            )
            latents = nxt
    finally:
        state.step_index, state.timestep = -1, -1


def per_prompt(values: torch.Tensor, n_prompts: int) -> torch.Tensor:
    """(n_prompts * n_seeds, ...) rows, prompt-major -> (n_prompts, n_seeds, ...)."""
    return values.reshape(n_prompts, -1, *values.shape[1:])


@contextlib.contextmanager
def capture_processors(pipe: "PipelineAdapter", processors: dict[str, Any]) -> Iterator[None]:
    """Install cross-attention processors for the block, then put the originals back
    (the very same objects), whatever happens inside."""
    unet = pipe.unet
    saved = dict(unet.attn_processors)
    bad = [k for k in processors if ".attn2." not in k or k not in saved]
    if bad:
        raise ConfigError(f"detector processors on non-cross-attention keys: {bad[:3]}")
    try:
        unet.set_attn_processor({**saved, **processors})  # diffusers pops from the dict
        yield
    finally:
        unet.set_attn_processor(dict(saved))
