"""``anisotropy``: memorization from two guided UNet calls on pure noise (Asthana and
Belagiannis, ICLR 2026, "Detecting and Mitigating Memorization in Diffusion Models through
Anisotropy of the Log-Probability").

A memorized prompt makes the score field anisotropic: at the first step its text-conditional
noise is large (as in Wen et al.'s magnitude), and on pure noise presented at a late, nearly
clean timestep the text-conditional direction lines up with the unconditional prediction,
because both already point towards the one training image. With ``x_T`` the initial noise,
``d = eps(x_T, c) - eps(x_T, c_0)``::

    norm    = || d at the first timestep ||
    cosine  = mean over pixels of cos( eps(x_T, c_0), d ) over the channels, at the
              third-to-last timestep of the suite's schedule, on the same x_T
    score   = gamma_norm * norm + gamma_cosine * cosine

averaged over ``seeds`` initial noises. Both calls see the same pure noise and no sampler
step is taken: 2 CFG calls (4 UNet evaluations) per seed. Defaults are the authors' for
Stable Diffusion 1.x: gamma_norm 1, gamma_cosine 2, one image per prompt. Predictions are
converted to noise units whatever the UNet regresses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from memorybench.api.detector import DetectionScores, Detector, register_detector
from memorybench.errors import ConfigError
from memorybench.model.sampling import seed_range
from memorybench.model.trajectory import per_prompt


@dataclass
class AnisotropyConfig:
    seeds: int = 1  # initial noises per prompt (the authors' gen_num)
    seed_offset: int = 0
    gamma_norm: float = 1.0  # weight of the first-step text-noise norm (SD 1.x: 1, SD 2: 1)
    gamma_cosine: float = 2.0  # weight of the late-timestep cosine (SD 1.x: 2, SD 2: 0.1)
    cosine_step_from_end: int = 3  # the cosine's timestep: this many from the end of the schedule

    def __post_init__(self) -> None:
        if self.seeds < 1 or self.cosine_step_from_end < 1:
            raise ValueError("seeds and cosine_step_from_end must be >= 1")
        if self.gamma_norm < 0 or self.gamma_cosine < 0:  # a negative weight turns the score around
            raise ValueError("gamma_norm and gamma_cosine must be >= 0")


def _halves(pipe, x, t, cond, uncond, scheduler) -> tuple[torch.Tensor, torch.Tensor]:
    pred = pipe.cfg_prediction(x, t, cond, uncond, scheduler)
    return (pipe.to_epsilon(pred.uncond, pred.model_input, t, scheduler).double(),
            pipe.to_epsilon(pred.cond, pred.model_input, t, scheduler).double())


@register_detector()
class Anisotropy(Detector):
    name = "anisotropy"
    Config = AnisotropyConfig
    description = "Text-noise norm at the first step plus its alignment with the unconditional noise late, both on pure noise (Asthana and Belagiannis 2026)"
    reference = ("Asthana and Belagiannis, ICLR 2026, Detecting and Mitigating Memorization in Diffusion Models through "
                 "Anisotropy of the Log-Probability (authors' code memorization-anisotropy, detect_mem.py / detect_eval.py): "
                 "norm at timesteps[0] + 2 x cosine(eps_u, eps_c - eps_u) over channels at timesteps[-3], same pure noise, "
                 "1 image per prompt (SD 1.x weights 1 and 2)")

    @torch.no_grad()
    def score(self, pipe, prompts, settings) -> DetectionScores:
        cfg = self.config
        scheduler = pipe.make_scheduler(settings.sampler)
        scheduler.set_timesteps(settings.steps, device=pipe.device)
        timesteps = list(scheduler.timesteps)
        if cfg.cosine_step_from_end > len(timesteps):
            raise ConfigError(f"anisotropy: cosine_step_from_end {cfg.cosine_step_from_end} exceeds the "
                              f"{len(timesteps)} sampler steps (use more --steps or a smaller cosine_step_from_end)")
        t_first, t_late = timesteps[0], timesteps[-cfg.cosine_step_from_end]
        seeds = seed_range(cfg.seeds, cfg.seed_offset)
        rows_prompts = [p for p in prompts for _ in seeds]
        rows_seeds = [s for _ in prompts for s in seeds]
        x = pipe.initial_latents(rows_seeds, settings, scheduler)
        cond = pipe.encode_prompts(rows_prompts)
        uncond = pipe.encode_prompts([""] * len(rows_prompts))
        pipe.state.begin(rows_prompts, rows_seeds, settings.steps)
        try:
            pipe.state.step_index, pipe.state.timestep = 0, int(t_first)
            eps_u, eps_c = _halves(pipe, x, t_first, cond, uncond, scheduler)
            norm = (eps_c - eps_u).flatten(1).norm(dim=1)
            pipe.state.step_index, pipe.state.timestep = len(timesteps) - cfg.cosine_step_from_end, int(t_late)
            eps_u, eps_c = _halves(pipe, x, t_late, cond, uncond, scheduler)
            cosine = torch.nn.functional.cosine_similarity(eps_u, eps_c - eps_u, dim=1).flatten(1).mean(dim=1)
        finally:
            pipe.state.end()
        norm = per_prompt(norm.cpu(), len(prompts)).mean(dim=1)
        cosine = per_prompt(cosine.cpu(), len(prompts)).mean(dim=1)
        scores = cfg.gamma_norm * norm + cfg.gamma_cosine * cosine
        return DetectionScores(scores.numpy(), {"norm": norm.numpy(), "cosine": cosine.numpy()})

    def unet_calls_per_prompt(self, settings) -> int:
        return 4 * self.config.seeds  # two CFG calls on the same pure noise
