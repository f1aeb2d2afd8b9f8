"""``overestimation``: early over-estimation and trajectory collapse (Kim, Kim and Lee,
"How Diffusion Models Memorize", arXiv 2509.25705).

Kim, Kim and Lee trace memorization to the first denoising steps: under classifier-free guidance
a memorized prompt makes the model over-estimate its training image (the predicted clean
sample is pushed beyond what the data allow), the initial randomness is suppressed, and
trajectories from different initial noises collapse onto the same image. Three figures
come from the first ``steps`` CFG steps of ``seeds`` initial noises per prompt, using the
Tweedie estimate x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t) with the guided eps:

- ``collapse``: mean pairwise cosine similarity of the x0 estimates across seeds (the
  noises are independent, so a prompt that does not pin one image gives dissimilar x0s);
- ``overestimation``: ||x0(guided)|| / ||x0(unconditional)||, the factor by which guidance
  inflates the clean-sample estimate over the unconditional one at the same x_t (the paper
  attributes memorization to this guidance-driven over-estimation);
- ``latent_deviation``: RMS of the next latent minus 1, the RMS a variance-preserving
  schedule gives unit-variance latents (reported only: weak on its own).

Each is averaged over the first ``steps`` steps (and seeds). ``score`` selects the
detector's output: ``collapse`` (default), ``overestimation``, or ``combined`` =
collapse x overestimation (both grow with memorization; the product needs no reference
set to normalise against, unlike a sum of z-scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from memorybench.api.detector import DetectionScores, TrajectoryConfig, TrajectoryDetector
from memorybench.model.trajectory import clean_estimate, per_prompt
from memorybench.api.detector import register_detector


@dataclass
class OverEstimationConfig(TrajectoryConfig):
    # average over the first k denoising steps. 6 (a quarter of the tiny-world suite's 25):
    # at step 1 a strongly text-conditioned model predicts nearly the same x0 from any noise
    # for every prompt, general ones too; collapse shows only once the early steps have run
    steps: int = 6
    score: Literal["collapse", "overestimation", "combined"] = "collapse"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seeds < 2:
            raise ValueError("seeds must be >= 2: trajectory collapse compares seeds")


def pairwise_cosine(x: torch.Tensor) -> torch.Tensor:
    """(prompts, seeds, d) -> (prompts,) mean cosine similarity over pairs of distinct seeds."""
    z = torch.nn.functional.normalize(x, dim=2)
    sim = z @ z.transpose(1, 2)
    n = x.shape[1]
    off = ~torch.eye(n, dtype=torch.bool, device=x.device)
    return sim[:, off].mean(dim=1)


@register_detector()
class OverEstimation(TrajectoryDetector):
    name = "overestimation"
    description = "Early over-estimation of x0 under guidance and trajectory collapse across seeds (Kim, Kim and Lee 2025)"
    Config = OverEstimationConfig
    reference = "Kim, Kim and Lee 2025, How Diffusion Models Memorize, arXiv 2509.25705: early over-estimation, trajectory collapse"

    def score(self, pipe, prompts, settings) -> DetectionScores:
        cfg = self.config
        n = len(prompts)
        sums = {k: torch.zeros(n, dtype=torch.float64) for k in ("collapse", "overestimation", "latent_deviation")}
        for rec in self.trajectory(pipe, prompts, settings):
            a = rec.alpha_bar
            x_t = rec.latents.double()
            x0_g = clean_estimate(x_t, rec.eps_guided.double(), a).flatten(1)
            x0_u = clean_estimate(x_t, rec.eps_uncond.double(), a).flatten(1)
            sums["collapse"] += pairwise_cosine(per_prompt(x0_g, n)).cpu()
            sums["overestimation"] += per_prompt((x0_g.norm(dim=1) / x0_u.norm(dim=1)).cpu(), n).mean(dim=1)
            rms = rec.next_latents.double().flatten(1).pow(2).mean(dim=1).sqrt()
            sums["latent_deviation"] += per_prompt((rms - 1.0).cpu(), n).mean(dim=1)
        comp = {k: (v / cfg.steps).numpy() for k, v in sums.items()}
        if cfg.score == "combined":
            score = comp["collapse"] * comp["overestimation"]
        else:
            score = comp[cfg.score]
        return DetectionScores(score, comp)
