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

from memorybench.api.detector import DetectionScores, TrajectoryConfig, TrajectoryDetector
from memorybench.model.trajectory import per_prompt
from memorybench.api.detector import register_detector


@dataclass
class WenMagnitudeConfig(TrajectoryConfig):
    """Wen's defaults: the first step only (k = 1), 4 images per prompt."""


@register_detector()
class WenMagnitude(TrajectoryDetector):
    """Scores a prompt by how hard its text condition pushes the first noise prediction."""

    name = "wen-magnitude"
    Config = WenMagnitudeConfig
    description = "Norm of the text-conditional noise prediction at the first step(s) (Wen et al. 2024)"
    reference = "Wen et al., ICLR 2024: d = mean_t ||eps(x_t,c) - eps(x_t,c0)||_2, k = 1 step, 4 images per prompt"

    def score(self, pipe, prompts, settings) -> DetectionScores:
        cfg = self.config
        total = torch.zeros(len(prompts), cfg.seeds, dtype=torch.float64)
        for rec in self.trajectory(pipe, prompts, settings):
            diff = (rec.eps_cond - rec.eps_uncond).double().flatten(1)
            total += per_prompt(diff.norm(dim=1).cpu(), len(prompts))
        per_seed = total / cfg.steps
        return DetectionScores(per_seed.mean(dim=1).numpy(),
                               {"seed_std": per_seed.std(dim=1).numpy() if cfg.seeds > 1 else np.zeros(len(prompts))})
