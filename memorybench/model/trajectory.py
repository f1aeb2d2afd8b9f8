"""The first denoising steps of a prompt batch, step by step: what detectors read.

``early_trajectory`` runs the suite's sampler with classifier-free guidance for every
(prompt, seed) through the pipeline's one guided UNet call and hands each step's latents
and both noise predictions (converted to epsilon, whatever the UNet regresses) to the
caller. ``clean_estimate`` and ``per_prompt`` are the small pieces detectors share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

import torch

from memorybench.errors import ConfigError

if TYPE_CHECKING:
    from memorybench.model.pipeline import PipelineAdapter, SamplerSettings


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
    state.begin(rows_prompts, rows_seeds, settings.steps)
    timesteps = list(scheduler.timesteps)
    try:
        for i, t in enumerate(timesteps[:steps]):
            state.step_index, state.timestep = i, int(t)
            pred = pipe.cfg_prediction(latents, t, cond, uncond, scheduler)
            out_g = pred.guided(settings.guidance)
            nxt = scheduler.step(out_g, t, latents).prev_sample
            # detectors read noise predictions, whatever the UNet regresses
            eps_u, eps_c, eps_g = (pipe.to_epsilon(o, pred.model_input, t, scheduler) for o in (pred.uncond, pred.cond, out_g))
            t_next = int(timesteps[i + 1]) if i + 1 < len(timesteps) else -1
            yield StepRecord(
                step=i, timestep=int(t), alpha_bar=float(alphas[int(t)]), latents=latents,
                eps_uncond=eps_u, eps_cond=eps_c, eps_guided=eps_g, next_latents=nxt,
                next_alpha_bar=float(alphas[t_next]) if t_next >= 0 else 1.0,
            )
            latents = nxt
    finally:
        state.end()


def per_prompt(values: torch.Tensor, n_prompts: int) -> torch.Tensor:
    """(n_prompts * n_seeds, ...) rows, prompt-major -> (n_prompts, n_seeds, ...)."""
    return values.reshape(n_prompts, -1, *values.shape[1:])
