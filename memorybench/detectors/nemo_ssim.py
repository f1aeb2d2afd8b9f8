"""``nemo-ssim``: memorization strength as in Finding NeMo (Hintersdorf et al., "Finding NeMo:
Localizing Neurons Responsible for Memorization in Diffusion Models", NeurIPS 2024).

For a memorized prompt the text-conditional noise prediction of an early step looks the
same whatever the initial noise: it already draws the training image. The score is the
largest pairwise (MS-)SSIM, over ``seeds`` initial noises, of the maps

    (eps(x_t, c) - x_t), min-max scaled per channel

read at sampler step ``early_step`` with guidance 0 (the text condition only). The authors
call a prompt memorized above 0.428 and use 10 seeds and the map of the second step
(``early_step = 1``); their code is ml-research/localizing_memorization_in_diffusion_models.
On latents too small for three MS-SSIM scales with an 11-pixel window, fewer scales and a
smaller window are used (see ``ms_ssim_plan`` in the ``nemo`` method).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from memorybench.api.detector import DetectionScores, Detector, register_detector
from memorybench.errors import ConfigError
from memorybench.methods.nemo import max_pairwise_ssim, noise_maps


@dataclass
class NemoSSIMConfig:
    seeds: int = 10
    seed_offset: int = 1  # the authors' seed 1
    early_step: int = 1

    def __post_init__(self) -> None:
        if self.seeds < 2 or self.early_step < 0:
            raise ValueError("seeds must be >= 2 and early_step >= 0")


@register_detector()
class NemoSSIM(Detector):
    name = "nemo-ssim"
    Config = NemoSSIMConfig
    description = "Largest pairwise SSIM of early text-conditional noise maps across seeds (Hintersdorf et al. 2024)"
    reference = ("Hintersdorf et al., Finding NeMo, NeurIPS 2024: max pairwise MS-SSIM of the second-step "
                 "noise maps over 10 seeds (seed 1), guidance 0, memorized above 0.428")

    def score(self, pipe, prompts, settings) -> DetectionScores:
        if getattr(pipe, "is_sdxl", False):  # its noise maps come from text-only UNet calls
            raise ConfigError("nemo-ssim does not support SDXL yet (SD 1.x and 2.x only)")
        cfg = self.config
        seeds = list(range(cfg.seed_offset, cfg.seed_offset + cfg.seeds))
        scores, means = [], []
        for p in prompts:
            best = max_pairwise_ssim(noise_maps(pipe, p, settings, seeds, cfg.early_step))
            scores.append(float(best.max()))
            means.append(float(best.mean()))
        return DetectionScores(np.array(scores), {"mean_max_pairwise": np.array(means)})

    def unet_calls_per_prompt(self, settings) -> int:
        return self.config.seeds * (min(self.config.early_step, settings.steps - 1) + 1)
