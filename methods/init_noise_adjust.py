"""``init-noise-adjust``: move the initial noise out of the attraction basin (Han et al.,
NeurIPS 2025).

Han, Kim, Joo, Hong and Lee, "Adjusting Initial Noise to Mitigate Memorization in
Text-to-Image Diffusion Models": how long a memorized prompt's trajectory stays in the
attraction basin, where classifier-free guidance steers it onto the training image,
depends on the initial noise. Adjusting the noise so that the trajectory escapes early lets
guidance start early, which keeps prompt adherence. Two modes:

- ``batch-wise`` (every image of the batch at once, no per-image target): ``adj_iters``
  sharpness-aware steps at the first timestep. With ``d(x) = eps(x, c) - eps(x, c_0)``,
  each step moves ``x`` against the change of ``d`` along its own direction::

      delta = rho * d(x) / ||d(x)||
      x    <- x - gamma * (d(x + delta) - d(x))

  then samples with guidance off (the unconditional prediction) for the steps
  ``0 .. apply_cfg_step`` and the suite's guidance afterwards.
- ``per-sample``: AdamW on each image's initial noise, minimising ``||d(x)||`` at the
  first timestep until it is at most ``target_loss`` (or ``optim_iters`` iterations), then
  ordinary guided sampling. Each image stops on its own.

``d`` is measured in noise units whatever the UNet regresses. Every image's adjustment
depends only on its own prompt and noise (the perturbation and the loss are per image, and
AdamW is elementwise), so an image does not depend on the batch it is generated in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from memorybench.api.method import Method, register_method


@dataclass
class InitNoiseAdjustConfig:
    mode: Literal["batch-wise", "per-sample"] = "batch-wise"
    # batch-wise (the authors' README command)
    rho: float = 50.0  # length of the sharpness probe, in latent units (SD 1.4's latent norm is about 128)
    gamma: float = 0.7  # step size of the adjustment
    adj_iters: int = 2  # adjustment steps
    apply_cfg_step: int = 4  # steps 0 .. apply_cfg_step sample without guidance (counted in the suite's steps)
    # per-sample
    target_loss: float = 0.9  # stop once ||eps_c - eps_u|| at the first timestep is at most this
    lr: float = 0.01  # AdamW learning rate on the initial noise
    optim_iters: int = 1000  # at most this many AdamW steps per image

    def __post_init__(self) -> None:
        if self.mode not in ("batch-wise", "per-sample"):
            raise ValueError(f"mode must be 'batch-wise' or 'per-sample', got {self.mode!r}")
        if self.rho <= 0 or self.lr <= 0 or self.gamma <= 0:
            raise ValueError("rho, lr and gamma must be > 0")
        if self.target_loss < 0:  # a norm: a negative target is never reached
            raise ValueError(f"target_loss must be >= 0, got {self.target_loss}")
        if self.adj_iters < 0 or self.optim_iters < 0 or self.apply_cfg_step < -1:
            raise ValueError("adj_iters and optim_iters must be >= 0, apply_cfg_step >= -1")


def text_noise(pipe, latents: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor, scheduler) -> torch.Tensor:
    """``eps(x, c) - eps(x, c_0)`` at timestep ``t`` in noise units, differentiable in ``latents``."""
    pred = pipe.cfg_prediction(latents, t, cond, uncond, scheduler)
    return (pipe.to_epsilon(pred.cond, pred.model_input, t, scheduler)
            - pipe.to_epsilon(pred.uncond, pred.model_input, t, scheduler))


def per_image_norm(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).norm(dim=1)


def first_timestep(pipe, settings):
    scheduler = pipe.make_scheduler(settings.sampler)
    scheduler.set_timesteps(settings.steps, device=pipe.device)
    return scheduler, scheduler.timesteps[0]


@torch.no_grad()
def adjust_batch_wise(pipe, latents, cond, uncond, settings, rho: float, gamma: float, iters: int) -> torch.Tensor:
    scheduler, t = first_timestep(pipe, settings)
    x = latents.clone()
    for _ in range(iters):
        d = text_noise(pipe, x, t, cond, uncond, scheduler)
        delta = rho * d / per_image_norm(d).clamp_min(1e-12).view(-1, *([1] * (d.dim() - 1)))
        d_probe = text_noise(pipe, x + delta, t, cond, uncond, scheduler)
        x = x - gamma * (d_probe - d)
    return x


def adjust_per_sample(pipe, latents, cond, uncond, settings, target: float, lr: float, iters: int) -> tuple[torch.Tensor, list[int]]:
    """Adjusted noise and the AdamW steps each image took (``iters`` = target not reached)."""
    scheduler, t = first_timestep(pipe, settings)
    x = latents.detach().clone().float().requires_grad_(True)
    optimizer = torch.optim.AdamW([x], lr=lr)
    result = latents.detach().clone()
    done = torch.zeros(latents.shape[0], dtype=torch.bool)
    steps = [iters] * latents.shape[0]
    with torch.enable_grad():
        for j in range(iters + 1):
            loss = per_image_norm(text_noise(pipe, x.to(latents.dtype), t, cond, uncond, scheduler).float())
            reached = (loss.detach().cpu() <= target) & ~done
            for i in torch.nonzero(reached).flatten().tolist():
                result[i] = x.detach()[i].to(latents.dtype)
                steps[i] = j
            done |= reached
            if bool(done.all()) or j == iters:
                break
            optimizer.zero_grad()
            loss[~done.to(loss.device)].sum().backward()
            optimizer.step()
    for i in torch.nonzero(~done).flatten().tolist():
        result[i] = x.detach()[i].to(latents.dtype)
    return result, steps


@register_method()
class InitNoiseAdjust(Method):
    name = "init-noise-adjust"
    kind = "inference"
    description = "Adjust the initial noise so the trajectory leaves the attraction basin early (Han et al. 2025)"
    Config = InitNoiseAdjustConfig
    reference = ("Han, Kim, Joo, Hong and Lee, NeurIPS 2025, Adjusting Initial Noise to Mitigate Memorization in "
                 "Text-to-Image Diffusion Models; authors' README: batch-wise rho 50, gamma 0.7, 2 iterations, "
                 "guidance from step 5 of 50; per-sample target loss 0.9, lr 0.01, at most 1000 AdamW steps")

    def __init__(self, config=None):
        super().__init__(config)
        self.last_steps: list[int] = []  # per-sample mode: AdamW steps per image of the last batch

    def adjust_initial_latents(self, pipe, latents, cond, uncond, settings):
        cfg = self.config
        if cfg.mode == "batch-wise":
            return adjust_batch_wise(pipe, latents, cond, uncond, settings, cfg.rho, cfg.gamma, cfg.adj_iters)
        adjusted, self.last_steps = adjust_per_sample(pipe, latents, cond, uncond, settings,
                                                      cfg.target_loss, cfg.lr, cfg.optim_iters)
        return adjusted

    def guidance_scale(self, step, num_steps, default):
        if self.config.mode == "batch-wise" and step <= self.config.apply_cfg_step:
            return 0.0
        return default
