"""``wanda-prune``: prune "memorized neurons" found with Wanda scores (Chavhan et al.,
"Memorized Images in Diffusion Models share a Subspace that can be Located and Deleted";
the authors' public code is ConceptPrune).

For each transformer block's FFN second Linear ``W`` (``ff.net[2]``, d_out x d_in) and each of
the first ``timesteps`` denoising steps, the input activations ``X`` are collected for the
calibration (memorized) prompts in the conditional branch and for the null prompt in the
unconditional branch of the same CFG forward pass (so both have the same row count). Wanda
scores are ``S_ij = |W_ij| * ||X_:,j||_2`` and ``S0_ij`` with the null activations. A weight is
memorized at step t when it is among the top ``sparsity`` of its row by ``S`` and
``S_ij > S0_ij``; the union over steps is zeroed. Defaults follow the authors' code:
1% per row, union over the first 10 steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from memorybench.errors import ConfigError
from memorybench.api.method import Method, MethodContext
from memorybench.api.method import register_method


@dataclass
class WandaPruneConfig:
    sparsity: float = 0.01  # share of each row's weights ranked as important (s)
    timesteps: int = 10  # union over the first k denoising steps
    subset_size: int = 0  # calibration prompts used to find the mask (0 = all the suite offers)
    seeds_per_prompt: int = 1
    batch_size: int = 16
    # control experiment: zero as many weights in each row as the Wanda mask does, chosen at
    # random, to tell the score's effect from the amount pruned
    random_control: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.sparsity <= 1.0:
            raise ValueError(f"sparsity must be in (0, 1], got {self.sparsity}")
        if self.timesteps < 1:
            raise ValueError(f"timesteps must be >= 1, got {self.timesteps}")
        if self.subset_size < 0 or self.seeds_per_prompt < 1 or self.batch_size < 1:
            raise ValueError("subset_size must be >= 0, seeds_per_prompt and batch_size >= 1")


def ffn_out_layers(pipe) -> dict[str, torch.nn.Linear]:
    return {name: block.ff.net[2] for name, block in pipe.transformer_blocks()}


@torch.no_grad()
def collect_feature_norms(pipe, prompts: list[str], settings, timesteps: int, seeds_per_prompt: int = 1,
                          batch_size: int = 16, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per layer: (timesteps, 2, d_in) L2 norms of the FFN-out inputs, [null, cond]."""
    layers = ffn_out_layers(pipe)
    sq = {name: torch.zeros(timesteps, 2, lin.in_features, dtype=torch.float64) for name, lin in layers.items()}

    def hook_for(name):
        def hook(module, inputs):
            step = pipe.state.step_index
            if 0 <= step < timesteps:
                x = inputs[0].detach().double()
                b = pipe.state.batch_size
                x = x.reshape(x.shape[0], -1, x.shape[-1])
                sq[name][step, 0] += x[:b].pow(2).sum(dim=(0, 1)).cpu()  # unconditional = null prompt
                sq[name][step, 1] += x[b:].pow(2).sum(dim=(0, 1)).cpu()
        return hook

    handles = [lin.register_forward_pre_hook(hook_for(name)) for name, lin in layers.items()]
    try:
        jobs = [(p, seed + k) for p in prompts for k in range(seeds_per_prompt)]
        for start in range(0, len(jobs), batch_size):
            batch = jobs[start:start + batch_size]
            pipe.sample_latents([p for p, _ in batch], [s for _, s in batch], settings, max_steps=timesteps)
    finally:
        for h in handles:
            h.remove()
    return {name: v.sqrt() for name, v in sq.items()}


def wanda_masks(weights: dict[str, torch.Tensor], norms: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Per layer: (timesteps, d_out, d_in) bool, memorized weights at each step."""
    masks = {}
    for name, w in weights.items():
        a = w.detach().abs().double().cpu()
        n = norms[name]  # (T, 2, d_in)
        k = max(1, math.ceil(sparsity * a.shape[1]))
        per_step = []
        for t in range(n.shape[0]):
            score = a * n[t, 1]  # conditional (memorized prompts)
            score_null = a * n[t, 0]
            top = torch.zeros_like(score, dtype=torch.bool)
            top.scatter_(1, score.topk(k, dim=1).indices, True)
            per_step.append(top & (score > score_null))
        masks[name] = torch.stack(per_step)
    return masks


def random_like_rows(mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random (d_out, d_in) bool mask with the same number of True entries per row as ``mask``."""
    counts = mask.sum(dim=1, keepdim=True)
    ranks = torch.rand(mask.shape, generator=generator).argsort(dim=1).argsort(dim=1)
    return ranks < counts


def find_memorized_weights(pipe, prompts: list[str], settings, config: WandaPruneConfig, seed: int = 0):
    norms = collect_feature_norms(pipe, prompts, settings, min(config.timesteps, settings.steps),
                                  config.seeds_per_prompt, config.batch_size, seed)
    weights = {name: lin.weight for name, lin in ffn_out_layers(pipe).items()}
    return wanda_masks(weights, norms, config.sparsity)


@register_method()
class WandaPrune(Method):
    name = "wanda-prune"
    kind = "weight-edit"
    description = "Zero FFN weights with top Wanda scores for memorized prompts vs the null prompt (Chavhan et al.)"
    Config = WandaPruneConfig
    reference = "Chavhan et al., Memorized Images in Diffusion Models share a Subspace that can be Located and Deleted; ConceptPrune code: s=1%, 10 steps"

    def prepare(self, pipe, ctx: MethodContext) -> None:
        prompts = list(ctx.calibration_prompts)
        if self.config.subset_size:
            prompts = prompts[: self.config.subset_size]
        if not prompts:
            raise ConfigError("wanda-prune needs calibration prompts: the suite must set calibration_prompts")
        if ctx.settings is None:
            raise ConfigError("wanda-prune needs the suite's sampler settings")
        masks = find_memorized_weights(pipe, prompts, ctx.settings, self.config, ctx.seed)
        per_layer, per_step, total, pruned = {}, None, 0, 0
        control_rng = torch.Generator().manual_seed(ctx.seed + 1)
        for name, lin in ffn_out_layers(pipe).items():
            m = masks[name]
            union = m.any(dim=0)
            if self.config.random_control:
                union = random_like_rows(union, control_rng)
            ctx.set_parameter(lin.weight, lin.weight * (~union).to(lin.weight.device, lin.weight.dtype))
            per_layer[name] = float(union.double().mean())
            step_density = m.double().mean(dim=(1, 2))
            per_step = step_density if per_step is None else per_step + step_density
            total += union.numel()
            pruned += int(union.sum())
        ctx.report.update({
            "prompts_used": len(prompts),
            "random_control": self.config.random_control,
            "mask_density_total": pruned / total,
            "mask_density_per_layer": per_layer,
            "mask_density_per_timestep": [float(x) / len(per_layer) for x in per_step],
        })
