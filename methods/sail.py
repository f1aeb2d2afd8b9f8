"""``sail``: Sharpness-Aware Initialization for Latent diffusion (SAIL), ICML 2025.

Jeon, Kim and No, "Understanding Memorization in Generative Models via Sharpness in
Probability Landscapes": a memorized prompt's conditional density is sharp around the
training image already at the first step, and the sharpness is visible through the
text-conditional noise ``d(x) = eps(x, c) - eps(x, c_0)``. SAIL searches for an initial
noise whose neighbourhood is not sharp, and then samples from it unchanged (no change to
the prompt, guidance or weights).

For each image, ``budget`` candidate noises are drawn and optimised together with Adam
(``lr``) for at most ``max_steps`` steps on the authors' proxy of the sharpness::

    loss(x) = || d(x + d(x) / ||d(x)||) || + norm_weight * ||x||

(the second term keeps the noise close to a Gaussian sample). The first candidate whose loss
falls to ``threshold`` or below is used; candidates that pass at the same step are taken in
order. The authors' script, when no candidate passes, raises the threshold by 0.1 and draws
new candidates until one does; here the search is bounded instead: after ``max_steps`` the
candidate with the lowest loss is used, and the result records how often that happened.

The candidates of an image are drawn from its own seed (candidate ``k`` of seed ``s`` uses
the generator seed ``s * budget + k + candidate_offset``), so an image depends only on its
prompt and seed. ``d`` is measured in noise units whatever the UNet regresses.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from memorybench.api.method import Method, register_method
from memorybench.methods.init_noise_adjust import first_timestep, per_image_norm, text_noise


@dataclass
class SailConfig:
    threshold: float = 8.2  # accept a candidate once its loss is at most this (l_thres of Algorithm 2)
    lr: float = 0.05  # Adam learning rate on the candidates
    budget: int = 8  # candidates optimised together per image
    max_steps: int = 10  # Adam steps at most
    norm_weight: float = 0.05  # weight of ||x|| (0.05 for SD 1.x in the authors' code, 0.01 for SD 2)
    candidate_offset: int = 1_000_003  # keeps candidate noises apart from the suite's own seeds

    def __post_init__(self) -> None:
        if self.budget < 1 or self.max_steps < 0 or self.lr <= 0:
            raise ValueError("budget must be >= 1, max_steps >= 0 and lr > 0")
        if self.threshold < 0 or self.norm_weight < 0:  # the loss is a sum of norms
            raise ValueError("threshold and norm_weight must be >= 0")


def sharpness_loss(pipe, x, t, cond, uncond, scheduler, norm_weight: float) -> torch.Tensor:
    """Per candidate: ||d(x + d(x)/||d(x)||)|| + norm_weight * ||x||, differentiable in ``x``."""
    d = text_noise(pipe, x, t, cond, uncond, scheduler)
    unit = d / per_image_norm(d).clamp_min(1e-12).view(-1, *([1] * (d.dim() - 1)))
    probe = text_noise(pipe, x + unit, t, cond, uncond, scheduler)
    return per_image_norm(probe.float()) + norm_weight * per_image_norm(x.float())


def candidate_noise(shape, seed: int, cfg: SailConfig, scale: float) -> torch.Tensor:
    gens = [torch.Generator("cpu").manual_seed(int(seed) * cfg.budget + k + cfg.candidate_offset) for k in range(cfg.budget)]
    return torch.stack([torch.randn(shape, generator=g) for g in gens]) * scale


def search_one(pipe, shape, seed, cond_1, uncond_1, settings, cfg: SailConfig, device, dtype) -> tuple[torch.Tensor, bool, int]:
    """One image's noise: (latent, found below the threshold, Adam steps used)."""
    scheduler, t = first_timestep(pipe, settings)
    x = candidate_noise(shape, seed, cfg, float(scheduler.init_noise_sigma)).to(device, torch.float32).requires_grad_(True)
    cond = cond_1.expand(cfg.budget, *cond_1.shape[1:])
    uncond = uncond_1.expand(cfg.budget, *uncond_1.shape[1:])
    optimizer = torch.optim.Adam([x], lr=cfg.lr)
    best, best_loss = None, float("inf")
    with torch.enable_grad():
        for step in range(cfg.max_steps + 1):
            loss = sharpness_loss(pipe, x.to(dtype), t, cond, uncond, scheduler, cfg.norm_weight)
            values = loss.detach().cpu()
            passed = torch.nonzero(values <= cfg.threshold).flatten()
            if len(passed):
                return x.detach()[int(passed[0])].to(dtype), True, step
            k = int(values.argmin())
            if float(values[k]) < best_loss:
                best, best_loss = x.detach()[k].clone().to(dtype), float(values[k])
            if step == cfg.max_steps:
                break
            optimizer.zero_grad()
            loss.sum().backward()
            optimizer.step()
    return best, False, cfg.max_steps


@register_method()
class Sail(Method):
    name = "sail"
    kind = "inference"
    description = "Search the initial noise for one whose neighbourhood is not sharp (SAIL, ICML 2025)"
    Config = SailConfig
    reference = ("Jeon, Kim and No, ICML 2025, Understanding Memorization in Generative Models via Sharpness in Probability "
                 "Landscapes (SAIL); authors' mitigate_mem.py: threshold 8.2, Adam lr 0.05, budget 8, at most 10 steps, "
                 "norm weight 0.05 (SD 1.x); bounded search (lowest loss after max_steps) instead of raising the threshold")

    def __init__(self, config=None):
        super().__init__(config)
        self.searches = 0  # images searched since construction
        self.fallbacks = 0  # of which no candidate reached the threshold

    def adjust_initial_latents(self, pipe, latents, cond, uncond, settings):
        state = pipe.state
        seeds, prompts = list(state.seeds), list(state.prompts)
        out = []
        try:
            for i in range(latents.shape[0]):
                # the UNet sees `budget` copies of one prompt: the sampling state says so (SDXL reads it)
                state.prompts, state.seeds, state.batch_size = [prompts[i]] * self.config.budget, [seeds[i]] * self.config.budget, self.config.budget
                x, found, _ = search_one(pipe, latents.shape[1:], seeds[i], cond[i:i + 1], uncond[i:i + 1], settings,
                                         self.config, latents.device, latents.dtype)
                self.searches += 1
                self.fallbacks += int(not found)
                out.append(x)
        finally:
            state.prompts, state.seeds, state.batch_size = prompts, seeds, len(prompts)
        return torch.stack(out)
