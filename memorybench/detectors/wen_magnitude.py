"""``wen-magnitude``: the magnitude of the text-conditional noise prediction (Wen et al.,
ICLR 2024, "Detecting, explaining, and mitigating memorization in diffusion models").

A memorized prompt pulls the noise prediction hard towards its training image from the
very first step, so the text-conditional part of the prediction is large:

    d(c) = mean over the first k steps and the seeds of ||eps(x_t, c) - eps(x_t, c_0)||_2

with c_0 the empty prompt and the norm over the whole latent. The paper reports that k = 1
already separates memorized from other prompts; its detection script averages 4 images per
prompt. Steps after the first follow the suite's CFG sampler.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from memorybench.detector import DetectionScores, Detector, early_trajectory, per_prompt, seed_list
from memorybench.registry import register_detector


@dataclass
class WenMagnitudeConfig:
    steps: int = 1  # k: average over the first k denoising steps
    seeds: int = 4  # images (initial noises) per prompt
    seed_offset: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.seeds < 1:
            raise ValueError("steps and seeds must be >= 1")


@register_detector()
class WenMagnitude(Detector):
    name = "wen-magnitude"
    description = "Norm of the text-conditional noise prediction at the first step(s) (Wen et al. 2024)"
    Config = WenMagnitudeConfig
    reference = "Wen et al., ICLR 2024: d = mean_t ||eps(x_t,c) - eps(x_t,c0)||_2, k = 1 step, 4 images per prompt"

    def score(self, pipe, prompts, settings) -> DetectionScores:
        cfg = self.config
        total = torch.zeros(len(prompts), cfg.seeds, dtype=torch.float64)
        for rec in early_trajectory(pipe, prompts, seed_list(cfg.seeds, cfg.seed_offset), settings, cfg.steps):
            diff = (rec.eps_cond - rec.eps_uncond).double().flatten(1)
            total += per_prompt(diff.norm(dim=1).cpu(), len(prompts))
        per_seed = total / cfg.steps
        return DetectionScores(per_seed.mean(dim=1).numpy(),
                               {"seed_std": per_seed.std(dim=1).numpy() if cfg.seeds > 1 else np.zeros(len(prompts))})

    def unet_calls_per_prompt(self, settings) -> int:
        return 2 * self.config.steps * self.config.seeds
