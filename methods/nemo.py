"""``nemo``: deactivate the cross-attention value neurons a memorized prompt relies on
(Hintersdorf et al., "Finding NeMo: Localizing Neurons Responsible for Memorization in
Diffusion Models", NeurIPS 2024).

Neurons are the output channels of the cross-attention value projections ``attn2.to_v`` of
the UNet's down and middle blocks (the seven layers of SD 1.x). Their activation for a
prompt is the absolute value projection of its text embedding averaged over tokens; the
method holds the mean and standard deviation of every neuron over reference prompts that
are not memorized.

For each prompt the pipeline is asked to generate (the first time it is seen):

1. *memorization strength*: the text-conditional noise prediction at an early sampler step
   (guidance 0) minus the latent, min-max scaled per channel, for ``samples`` seeds; the
   largest pairwise (MS-)SSIM of each seed's map against the others. Seeds above
   ``ssim_threshold`` (0.428) are the memorized ones; a prompt with none is left alone;
2. *initial selection*: neurons whose z-score against the reference statistics exceeds
   theta, plus the top-k neurons by activation; theta starts at 5 and drops by 0.25 (k rises
   by one) per round until the SSIM between the unblocked and the blocked maps of the
   memorized seeds falls below the threshold (or theta reaches 1);
3. *refinement*: whole layers, then single neurons, are unblocked again when the SSIM
   stays below the threshold without them;
4. during generation the selected neurons of that prompt are scaled by ``scaling`` (0) in
   both halves of the CFG batch.

Defaults follow the authors' code (ml-research/localizing_memorization_in_diffusion_models,
``3_detect_memorized_neurons.py``): theta 5 -> 1 in steps of 0.25, k from 0, SSIM threshold
0.428, 10 samples, seed 1, the map of the second sampler step, neurons scaled to 0. Where
the latent is too small for three MS-SSIM scales with an 11-pixel window (the tiny world's
16x16 latents) fewer scales and a smaller window are used; the report records which.
The reference prompts stand in for the authors' held-out LAION prompts: generic captions
unless ``reference_prompts`` names others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from memorybench.api.method import Method, MethodContext, register_method
from memorybench.errors import ConfigError
from memorybench.model.sampling import SamplerSettings

GENERIC_CAPTIONS = (
    "a photo of a dog on the grass", "a red car parked on the street", "a bowl of fruit on a table",
    "a man riding a bicycle", "a painting of a mountain lake", "a cat sleeping on a sofa",
    "a city skyline at night", "a plate of pasta with tomato sauce", "two children playing in the park",
    "an old wooden boat on the beach", "a bird sitting on a branch", "a cup of coffee and a book",
    "a yellow triangle", "a white circle", "a blue square", "a green star", "a red circle",
    "a black and white photo of a street", "a living room with a large window", "a horse in a field",
    "a bunch of flowers in a vase", "a train arriving at a station", "a snowy forest in winter",
    "a woman holding an umbrella", "a close up of a pizza", "a kitchen with white cabinets",
    "a group of people at a concert", "a small house by the river", "a dog catching a frisbee",
    "a bridge over a river at sunset", "a desk with a laptop", "an airplane in the blue sky",
)


@dataclass
class NemoConfig:
    theta_start: float = 5.0
    theta_step: float = 0.25
    theta_min: float = 1.0
    top_k: bool = True  # add the k most active neurons, k rising by one per round from 0
    ssim_threshold: float = 0.428
    samples: int = 10  # seeds for the memorization strength
    seed: int = 1  # first seed of those samples
    early_step: int = 1  # sampler step whose noise prediction is read (the authors' code: the second)
    refine: bool = True
    scaling: float = 0.0  # factor on the selected neurons during generation
    max_rounds: int = 100
    reference_prompts: tuple[str, ...] = field(default_factory=tuple)  # empty: the generic captions

    def __post_init__(self) -> None:
        if not self.theta_start >= self.theta_min > 0 or self.theta_step <= 0:
            raise ValueError("theta_start >= theta_min > 0 and theta_step > 0 required")
        if self.samples < 2 or self.early_step < 0 or self.max_rounds < 1:
            raise ValueError("samples >= 2, early_step >= 0 and max_rounds >= 1 required")
        if not -1.0 <= self.ssim_threshold <= 1.0:  # an SSIM lies in [-1, 1]
            raise ValueError(f"ssim_threshold must be in [-1, 1], got {self.ssim_threshold}")
        self.reference_prompts = tuple(self.reference_prompts)


def value_layers(pipe) -> list[tuple[str, torch.nn.Linear]]:
    """The ``attn2.to_v`` projections of the down and middle blocks, in UNet order."""
    return [(n, m) for n, m in pipe.unet.named_modules()
            if n.endswith("attn2.to_v") and n.startswith(("down_blocks", "mid_block"))]


@torch.no_grad()
def value_activations(pipe, prompt: str) -> list[torch.Tensor]:
    """Per layer: |to_v(text embedding)| averaged over tokens, one value per neuron."""
    emb = pipe.encode_prompts([prompt])
    return [layer(emb)[0].abs().mean(dim=0).float().cpu() for _, layer in value_layers(pipe)]


# -- (MS-)SSIM on [0, 1] maps -------------------------------------------------------------

def _gauss(size: int, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).float()


def _ssim_cs(a: torch.Tensor, b: torch.Tensor, kernel: int) -> tuple[torch.Tensor, torch.Tensor]:
    c = a.shape[1]
    g = _gauss(kernel).to(a.device)
    w = (g[:, None] * g[None, :]).expand(c, 1, kernel, kernel)
    f = lambda x: F.conv2d(x, w, groups=c)  # noqa: E731
    mu_a, mu_b = f(a), f(b)
    va, vb, cov = f(a * a) - mu_a ** 2, f(b * b) - mu_b ** 2, f(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    cs = (2 * cov + c2) / (va + vb + c2)
    ssim = (2 * mu_a * mu_b + c1) / (mu_a ** 2 + mu_b ** 2 + c1) * cs
    return ssim.flatten(1).mean(1), cs.flatten(1).mean(1)


def ms_ssim_plan(side: int, kernel: int = 11, scales: int = 3) -> tuple[int, int]:
    """(scales, window) that fit a map of ``side`` pixels: the authors' 3 scales and
    11-pixel window when they fit, fewer scales and then a smaller odd window otherwise."""
    while scales > 1 and side // 2 ** (scales - 1) < kernel:
        scales -= 1
    kernel = min(kernel, side if side % 2 else side - 1)
    return scales, max(kernel, 1)


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pair MS-SSIM of (N, C, H, W) maps in [0, 1], equal weights over the scales."""
    scales, kernel = ms_ssim_plan(min(a.shape[-2:]))
    beta = 1.0 / scales
    out = torch.ones(a.shape[0], device=a.device)
    for s in range(scales):
        ssim, cs = _ssim_cs(a.float(), b.float(), kernel)
        value = ssim if s == scales - 1 else cs
        out = out * value.clamp(min=0) ** beta  # negative parts count as 0 ("relu")
        if s < scales - 1:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
    return out


def max_pairwise_ssim(maps: torch.Tensor) -> torch.Tensor:
    """For each map, its largest MS-SSIM to any other map of the set."""
    n = maps.shape[0]
    i, j = torch.triu_indices(n, n, 1)
    sims = ms_ssim(maps[i], maps[j])
    best = torch.full((n,), -1.0)
    for k in range(n):
        best[k] = sims[(i == k) | (j == k)].max()
    return best


@torch.no_grad()
def noise_maps(pipe, prompt: str, settings, seeds: list[int], early_step: int) -> torch.Tensor:
    """(seeds, C, h, w) maps of eps(x_t, c) - x_t at sampler step ``early_step`` with the text
    condition only (guidance 0), each channel min-max scaled to [0, 1]."""
    scheduler = pipe.make_scheduler(settings.sampler)
    scheduler.set_timesteps(settings.steps, device=pipe.device)
    latents = pipe.initial_latents(seeds, settings, scheduler)
    cond = pipe.encode_prompts([prompt]).expand(len(seeds), -1, -1)
    for i, t in enumerate(scheduler.timesteps):
        eps = pipe.unet(scheduler.scale_model_input(latents, t), t, encoder_hidden_states=cond).sample
        if i >= min(early_step, settings.steps - 1):
            break
        latents = scheduler.step(eps, t, latents).prev_sample
    diff = (eps - latents).float()
    lo = diff.amin(dim=(2, 3), keepdim=True)
    hi = diff.amax(dim=(2, 3), keepdim=True)
    return (diff - lo) / (hi - lo).clamp(min=1e-12)


# -- blocking ----------------------------------------------------------------------------

class NeuronBlocker:
    """Forward hooks on the value layers: scale chosen output channels per prompt.

    ``forced`` (a list of index lists, one per layer) applies to every row (used while
    localizing); otherwise rows are matched to ``pipe.state.prompts`` (CFG batch
    ``[uncond; cond]``: both halves of a prompt's image) and blocked by ``table[prompt]``."""

    def __init__(self, pipe, scaling: float):
        self.pipe, self.scaling = pipe, scaling
        self.table: dict[str, list[list[int]]] = {}
        self.forced: list[list[int]] | None = None
        self.handles = [layer.register_forward_hook(self._hook(i)) for i, (_, layer) in enumerate(value_layers(pipe))]

    def _hook(self, layer_index: int):
        def hook(module, inputs, output):
            if self.forced is not None:
                idx = self.forced[layer_index]
                if not idx:
                    return output
                out = output.clone()
                out[..., idx] = out[..., idx] * self.scaling
                return out
            prompts = self.pipe.state.prompts
            if not prompts or not self.table:
                return output
            rows, n = output.shape[0], len(prompts)
            if rows % n:
                return output
            out = None
            for r in range(rows):
                idx = self.table.get(prompts[r % n])
                if idx and idx[layer_index]:
                    out = output.clone() if out is None else out
                    out[r, :, idx[layer_index]] = out[r, :, idx[layer_index]] * self.scaling
            return output if out is None else out
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


@register_method()
class Nemo(Method):
    name = "nemo"
    kind = "inference"
    description = "Deactivate out-of-distribution cross-attention value neurons of memorized prompts (Hintersdorf et al. 2024)"
    Config = NemoConfig
    reference = ("Hintersdorf et al., Finding NeMo: Localizing Neurons Responsible for Memorization in Diffusion "
                 "Models, NeurIPS 2024; code ml-research/localizing_memorization_in_diffusion_models: theta 5 -> 1 "
                 "step 0.25, top-k from 0, SSIM threshold 0.428, 10 samples, neurons scaled to 0")

    def prepare(self, pipe, ctx: MethodContext) -> None:
        if getattr(pipe, "is_sdxl", False):
            # its localization calls the UNet with text only, without SDXL's pooled embeddings
            raise ConfigError("nemo does not support SDXL yet (SD 1.x and 2.x only)")
        cfg = self.config
        refs = list(cfg.reference_prompts) or list(GENERIC_CAPTIONS)
        acts = [value_activations(pipe, p) for p in refs]
        self._mean = [torch.stack([a[i] for a in acts]).mean(0) for i in range(len(acts[0]))]
        self._std = [torch.stack([a[i] for a in acts]).std(0).clamp(min=1e-6) for i in range(len(acts[0]))]
        self._settings = ctx.settings or SamplerSettings()
        self._blocker = NeuronBlocker(pipe, cfg.scaling)
        self._records: dict[str, dict[str, Any]] = {}
        self._ctx = ctx
        side = min(pipe.latent_shape(self._settings.height, self._settings.width)[1:])
        scales, kernel = ms_ssim_plan(side)
        ctx.report["nemo"] = {"layers": [n for n, _ in value_layers(pipe)], "reference_prompts": len(refs),
                              "ms_ssim_scales": scales, "ms_ssim_window": kernel, "prompts": self._records}

    def remove(self, pipe, ctx: MethodContext) -> None:
        blocker = getattr(self, "_blocker", None)
        if blocker is not None:
            blocker.remove()
            self._blocker = None

    # -- localization ----------------------------------------------------------------
    def noise_maps(self, pipe, prompt: str, blocked: list[list[int]] | None) -> torch.Tensor:
        """The memorization-strength maps of ``prompt`` with ``blocked`` neurons scaled."""
        cfg = self.config
        self._blocker.forced = blocked if blocked is not None else [[] for _ in self._mean]
        state = pipe.state
        saved = (state.prompts, state.batch_size)
        state.prompts, state.batch_size = [], 0
        try:
            return noise_maps(pipe, prompt, self._settings, list(range(cfg.seed, cfg.seed + cfg.samples)),
                              cfg.early_step)
        finally:
            self._blocker.forced = None
            state.prompts, state.batch_size = saved

    def _select(self, acts: list[torch.Tensor], theta: float, k: int) -> list[list[int]]:
        out = []
        for a, m, sd in zip(acts, self._mean, self._std):
            idx = set(((a - m).abs() / sd > theta).nonzero().flatten().tolist())
            if k > 0:
                idx |= set(a.abs().topk(min(k, a.numel())).indices.tolist())
            out.append(sorted(idx))
        return out

    def localize(self, pipe, prompt: str) -> dict[str, Any]:
        cfg = self.config
        free = self.noise_maps(pipe, prompt, None)
        strength = max_pairwise_ssim(free)
        look = strength > cfg.ssim_threshold
        rec: dict[str, Any] = {"strength": float(strength.max()), "memorized": bool(look.any())}
        if not look.any():
            rec["neurons"] = [[] for _ in self._mean]
            return rec
        def blocked_ssim(blocked):
            # the same memorization strength as above (largest MS-SSIM between two seeds' noise
            # maps), measured with the neurons blocked
            return float(max_pairwise_ssim(self.noise_maps(pipe, prompt, blocked)).max())

        acts = value_activations(pipe, prompt)
        theta, k, threshold = cfg.theta_start, 0, cfg.ssim_threshold
        for rounds in range(1, cfg.max_rounds + 1):
            blocked = self._select(acts, theta, k)
            ssim = blocked_ssim(blocked)
            if ssim <= cfg.ssim_threshold:
                break
            if theta > cfg.theta_min:
                theta = max(cfg.theta_min, theta - cfg.theta_step)
            if cfg.top_k:
                k += 1
            if theta <= cfg.theta_min and not cfg.top_k:
                threshold = ssim  # nothing more to add: refine against what was reached
                break
        rec.update({"theta": theta, "k": k, "rounds": rounds, "initial_ssim": ssim,
                    "initial_neurons": sum(len(b) for b in blocked)})
        if cfg.refine:
            for li in reversed(range(len(blocked))):  # whole layers first
                if blocked[li]:
                    trial = [b if j != li else [] for j, b in enumerate(blocked)]
                    if blocked_ssim(trial) < threshold:
                        blocked = trial
            for li in reversed(range(len(blocked))):  # then single neurons
                for n in list(blocked[li]):
                    trial = [list(b) for b in blocked]
                    trial[li].remove(n)
                    if blocked_ssim(trial) < threshold:
                        blocked = trial
            rec["refined_ssim"] = blocked_ssim(blocked)
        rec["neurons"] = blocked
        rec["n_neurons"] = sum(len(b) for b in blocked)
        return rec

    def ensure(self, pipe, prompts: list[str]) -> None:
        """Localize every prompt not seen yet (a deployed NeMo does this per request)."""
        for p in dict.fromkeys(prompts):
            if p not in self._records:
                rec = self.localize(pipe, p)
                self._records[p] = {k: v for k, v in rec.items() if k != "neurons"}
                if any(rec["neurons"]):
                    self._blocker.table[p] = rec["neurons"]
                    self._records[p]["neurons"] = rec["neurons"]

    def prompt_embeds(self, pipe, cond, uncond, latents, settings, prompts):
        self.ensure(pipe, prompts)
        return cond
