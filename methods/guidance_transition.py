"""Guidance transitions of Jain et al., CVPR 2025: ``static-transition``,
``opposite-guidance`` and ``dynamic-transition``.

Jain, Kirchhof, Sadat, Lang et al., "Classifier-Free Guidance inside the Attraction Basin
May Cause Memorization": a memorized prompt's denoising trajectory sits in an attraction
basin during the first steps, and classifier-free guidance applied there steers it onto
the training image. Guidance applied only after the trajectory has left the basin keeps
prompt adherence without the copy. The three methods differ in how the end of the basin
is found:

- ``static-transition``: a fixed timestep. Until the scheduler's timestep falls below
  ``transition_t`` (500 in the paper) the guidance scale is ``early_guidance`` (0: the
  unconditional prediction); afterwards the suite's guidance applies.
- ``opposite-guidance``: negative guidance pushes the trajectory out of the basin faster:
  ``early_guidance = -2`` while the timestep is above ``transition_t = 650``, then the
  suite's guidance.
- ``dynamic-transition``: per image, guidance 1 (the conditional prediction alone) until
  the magnitude of the text-conditional noise, ``||eps(x_t, c) - eps(x_t, c_0)||``, passes
  its first local minimum along the trajectory; from that step on the suite's guidance.
  As in the authors' script, the minimum is recognised at the step after it (the first
  step whose magnitude is larger than the previous one, which was itself smaller than the
  one before), and that step is already guided. An image whose magnitude never turns up
  keeps guidance 1 to the end.

Timesteps are the scheduler's own ``t`` values, not step indices: with the tiny world's 25
DDIM steps over 1,000 training steps they are 961, 921, ..., 1, so ``transition_t = 500``
leaves the first 12 steps unguided. The magnitude is measured in noise units whatever the
UNet regresses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from memorybench.api.method import Method, register_method


@dataclass
class StaticTransitionConfig:
    transition_t: int = 500  # timesteps t >= this use early_guidance; below it the suite's guidance
    early_guidance: float = 0.0  # 0 = unconditional prediction (no guidance)

    def __post_init__(self) -> None:
        if not 0 <= self.transition_t <= 1000:
            raise ValueError(f"transition_t must be a timestep in [0, 1000], got {self.transition_t}")


@dataclass
class OppositeGuidanceConfig:
    transition_t: int = 650  # timesteps t >= this use the negative guidance
    early_guidance: float = -2.0  # guidance away from the prompt while inside the basin

    def __post_init__(self) -> None:
        if not 0 <= self.transition_t <= 1000:
            raise ValueError(f"transition_t must be a timestep in [0, 1000], got {self.transition_t}")


@dataclass
class DynamicTransitionConfig:
    early_guidance: float = 1.0  # before the transition: the conditional prediction alone


def timestep_scale(t, default: float, transition_t: int, early_guidance: float) -> float:
    """Guidance at scheduler timestep ``t``: ``early_guidance`` while ``t >= transition_t``."""
    return early_guidance if int(t) >= transition_t else default


class _TimestepTransition(Method):
    kind = "inference"

    def combine_guidance(self, pipe, step, t, prediction, guidance):
        cfg = self.config
        return prediction.guided(timestep_scale(t, guidance, cfg.transition_t, cfg.early_guidance))


@register_method()
class StaticTransition(_TimestepTransition):
    name = "static-transition"
    description = "No guidance until timestep 500, then the suite's (Jain et al. 2025, static transition point)"
    Config = StaticTransitionConfig
    reference = ("Jain et al., CVPR 2025, Classifier-Free Guidance inside the Attraction Basin May Cause Memorization: "
                 "static transition, guidance 0 for t >= 500 then the suite's guidance (paper: 7.5, DPM-Solver 50 steps)")


@register_method()
class OppositeGuidance(_TimestepTransition):
    name = "opposite-guidance"
    description = "Negative guidance (-2) until timestep 650, then the suite's (Jain et al. 2025)"
    Config = OppositeGuidanceConfig
    reference = ("Jain et al., CVPR 2025, Classifier-Free Guidance inside the Attraction Basin May Cause Memorization: "
                 "opposite guidance, scale -2 for t >= 650 then the suite's guidance")


@register_method()
class DynamicTransition(Method):
    name = "dynamic-transition"
    kind = "inference"
    description = "Guidance 1 until the text-noise magnitude's first local minimum, then the suite's (Jain et al. 2025)"
    Config = DynamicTransitionConfig
    reference = ("Jain et al., CVPR 2025, Classifier-Free Guidance inside the Attraction Basin May Cause Memorization: "
                 "dynamic transition, guidance 1 until the first local minimum of ||eps_c - eps_u|| (per image), "
                 "then the suite's guidance; authors' script mitigating_memorization/generate_test_dataset_dtp.py")

    def __init__(self, config=None):
        super().__init__(config)
        self._schedule: _TrainingSchedule | None = None
        self._history: torch.Tensor | None = None  # (steps so far, batch) magnitudes of the current batch
        self._switched: torch.Tensor | None = None  # (batch,) bool: transition passed
        self.transition_steps: list[int] = []  # step of each image's transition (-1: never), last batch

    def combine_guidance(self, pipe, step, t, prediction, guidance):
        if step == 0 or self._schedule is None:
            self._schedule = _TrainingSchedule(pipe)
        magnitude = text_noise_magnitude(pipe, prediction, t, self._schedule)
        if step == 0 or self._history is None or self._history.shape[1] != magnitude.shape[0]:
            self._history = magnitude[None]
            self._switched = torch.zeros_like(magnitude, dtype=torch.bool)
            self.transition_steps = [-1] * magnitude.shape[0]
        else:
            self._history = torch.cat([self._history, magnitude[None]])
        if self._history.shape[0] >= 3:
            before, prev, now = self._history[-3], self._history[-2], self._history[-1]
            turned = (~self._switched) & (now > prev) & (before > prev)
            for i in torch.nonzero(turned).flatten().tolist():
                self.transition_steps[i] = step
            self._switched |= turned
        scale = torch.where(self._switched, torch.tensor(float(guidance), dtype=torch.float64),
                            torch.tensor(float(self.config.early_guidance), dtype=torch.float64))
        scale = scale.to(prediction.cond.device, prediction.cond.dtype).view(-1, *([1] * (prediction.cond.dim() - 1)))
        return prediction.uncond + scale * (prediction.cond - prediction.uncond)


class _TrainingSchedule:
    """What ``PipelineAdapter.to_epsilon`` reads from a scheduler: the training schedule's
    cumulative alphas (the same for every sampler built from the model's config)."""

    def __init__(self, pipe):
        self.alphas_cumprod = pipe.make_scheduler("ddim").alphas_cumprod


def text_noise_magnitude(pipe, prediction, t, schedule) -> torch.Tensor:
    """Per image ``||eps(x_t, c) - eps(x_t, c_0)||`` in noise units (float64, on CPU)."""
    eps_u = pipe.to_epsilon(prediction.uncond, prediction.model_input, t, schedule)
    eps_c = pipe.to_epsilon(prediction.cond, prediction.model_input, t, schedule)
    return (eps_c - eps_u).double().flatten(1).norm(dim=1).cpu()
