"""``sail-sharpness``: the sharpness of the conditional density at the first step (Jeon,
Kim and No, ICML 2025, "Understanding Memorization in Generative Models via Sharpness in
Probability Landscapes").

A memorized prompt's conditional density is sharply peaked around its training image, and
the peak shows at the very first step as a large curvature along the text-conditional
score. With the score difference ``ds(x) = -(eps(x, c) - eps(x, c_0)) / sigma_t`` the paper
scores a prompt by the Hessian-vector product of the log-density difference with it::

    sharpness = mean over seeds (and the first ``steps`` steps) of || J_ds(x_t) . ds(x_t) ||

The authors' code takes the Jacobian-vector product by forward-mode differentiation; here it
is a central finite difference along the unit direction of ``ds`` (step ``fd_step`` in latent
units), which needs no forward-mode support from the UNet's attention kernels and costs two
extra CFG calls per seed and step. Steps after the first follow the suite's guided sampler;
predictions are converted to noise units whatever the UNet regresses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from memorybench.api.detector import DetectionScores, TrajectoryConfig, TrajectoryDetector, register_detector
from memorybench.model.trajectory import per_prompt


@dataclass
class SailSharpnessConfig(TrajectoryConfig):
    """The first step only, 4 images per prompt (as the authors' mitigation script)."""

    fd_step: float = 0.1  # finite-difference step along the unit direction of ds, in latent units

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fd_step <= 0:
            raise ValueError(f"fd_step must be > 0, got {self.fd_step}")


def _text_noise(pipe, x, t, cond, uncond, scheduler) -> torch.Tensor:
    pred = pipe.cfg_prediction(x, t, cond, uncond, scheduler)
    return (pipe.to_epsilon(pred.cond, pred.model_input, t, scheduler)
            - pipe.to_epsilon(pred.uncond, pred.model_input, t, scheduler))


@torch.no_grad()
def sharpness(pipe, latents, t, cond, uncond, scheduler, eps_diff: torch.Tensor, h: float) -> torch.Tensor:
    """Per row ``|| J_ds(x) ds(x) ||`` in score units, by central differences along ds."""
    alpha = float(scheduler.alphas_cumprod[int(t)])
    sigma = (1.0 - alpha) ** 0.5
    ds = -eps_diff.double() / sigma
    norm = ds.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (ds.dim() - 1)))
    unit = (ds / norm).to(latents.dtype)
    plus = _text_noise(pipe, latents + h * unit, t, cond, uncond, scheduler).double()
    minus = _text_noise(pipe, latents - h * unit, t, cond, uncond, scheduler).double()
    jvp_unit = -(plus - minus) / (2 * h) / sigma  # J_ds along the unit direction
    return (jvp_unit * norm).flatten(1).norm(dim=1)


@register_detector()
class SailSharpness(TrajectoryDetector):
    name = "sail-sharpness"
    Config = SailSharpnessConfig
    description = "Curvature of the conditional density along the text score at the first step (SAIL, Jeon et al. 2025)"
    reference = ("Jeon, Kim and No, ICML 2025, Understanding Memorization in Generative Models via Sharpness in "
                 "Probability Landscapes: ||H ds|| at the first step; authors' code uses forward-mode JVP, here a "
                 "central finite difference (step 0.1); 4 images per prompt")

    def score(self, pipe, prompts, settings) -> DetectionScores:
        cfg = self.config
        scheduler = pipe.make_scheduler(settings.sampler)
        scheduler.set_timesteps(settings.steps, device=pipe.device)
        total = torch.zeros(len(prompts), cfg.seeds, dtype=torch.float64)
        rows_prompts = [p for p in prompts for _ in range(cfg.seeds)]
        cond = pipe.encode_prompts(rows_prompts)
        uncond = pipe.encode_prompts([""] * len(rows_prompts))
        for rec in self.trajectory(pipe, prompts, settings):
            value = sharpness(pipe, rec.latents, rec.timestep, cond, uncond, scheduler,
                              rec.eps_cond - rec.eps_uncond, cfg.fd_step)
            total += per_prompt(value.cpu(), len(prompts))
        per_seed = total / cfg.steps
        return DetectionScores(per_seed.mean(dim=1).numpy(),
                               {"seed_std": per_seed.std(dim=1).numpy() if cfg.seeds > 1 else np.zeros(len(prompts))})

    def unet_calls_per_prompt(self, settings) -> int:
        return 6 * self.config.steps * self.config.seeds  # the CFG step and two probes
