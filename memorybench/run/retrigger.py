"""The re-trigger stage: is a memorized image removed, or only hidden from its prompt?

Kowalczuk, Hintersdorf, Struppek et al. ("Finding Dori: Memorization in Text-to-Image
Diffusion Models Is Not Local") show that pruning mitigations sever the path from a
memorized prompt to its image while the image stays in the model: a small gradient search
in the text-embedding space brings it back. A suite whose options hold ``retrigger_*``
keys runs this attack on every method after generation:

1. the suite's fine-tune (if any) and the method are applied exactly as in generation
   (weights edited, attention processors installed, per-step guidance);
2. for each memorized evaluation prompt, starting from the prompt's text embedding, a
   perturbation ``delta`` of the embedding (the first token frozen, as the BOS embedding
   is the same for every prompt) is optimised by Adam for ``retrigger_steps`` steps within
   an L2 ball (``retrigger_norm``: ``relative-l2``, radius = ``retrigger_budget`` x the
   norm of the prompt's embedding, or ``l2``, an absolute radius), projected after every
   step;
3. images are generated from the found embedding with the method still active and the
   suite's seeds: the attacker controls the embedding the pipeline receives and the method
   then does whatever it does (an embedding-optimising method optimises it further, a
   processor that keys on the prompt still sees the original prompt);
4. SSCD of those images to the prompt's training image, aggregated as ``sscd_mem``.

Objectives (``retrigger_objective``):

* ``denoise-target`` (default): the attacker holds the image it wants back and minimises
  the diffusion loss of that image's latent under the embedding, through the model as the
  method leaves it: at timesteps of the suite's sampler, noised with fresh noise each
  step, the guided prediction (the method's own guidance scale for that step) against the
  noise. This is the search of Finding Dori as we read it.
* ``noise-magnitude``: no image needed: maximise the text-conditional noise magnitude of
  Wen et al. (``||eps(x_T, c) - eps(x_T, empty)||``) at the first step over fresh noise.

Columns: ``retrigger_sscd_mem`` (per prompt: the larger of the prompt's ``sscd_mem`` and the
attacked generations' max over seeds of SSCD to the source; the attacker keeps the better
of its starting point and what it found, so for every method ``retrigger_sscd_mem >=
sscd_mem``), ``retrigger_copy_rate`` (share of memorized prompts whose value exceeds the
suite's calibrated copy threshold), ``retrigger_delta_rel`` (norm of the found
perturbation / norm of the prompt embedding) and the cost ``retrigger_unet_calls``,
``retrigger_seconds`` per prompt. Found embeddings and images are cached under
``CACHE/retrigger/`` by every input that changes them, one checked file per prompt, so a
re-run gives the same numbers and a killed attack resumes at the first unfinished prompt.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from memorybench.api.method import MethodContext, apply_method
from memorybench.core.config import config_from_dict, sha256_json
from memorybench.core.io import discard, read_checked, write_checked
from memorybench.errors import ConfigError
from memorybench.metrics.base import MetricValue
from memorybench.metrics.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, mean_with_ci

if TYPE_CHECKING:
    from memorybench.api.method import Method
    from memorybench.model.pipeline import PipelineAdapter, SamplerSettings
    from memorybench.suites.data import SuiteData
    from memorybench.suites.spec import Suite

# bump when the attack changes what it finds or generates for the same inputs; 2: the generation
# from the found embedding applies every hook of the method (initial noise, guidance combination)
STAGE_VERSION = 2
PREFIX = "retrigger_"
CACHE_FOLDER = "retrigger"
OBJECTIVES = ("denoise-target", "noise-magnitude")
NORMS = ("relative-l2", "l2")
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class RetriggerOptions:
    """The attack's budget and settings (suite options without the ``retrigger_`` prefix)."""

    objective: str = "denoise-target"
    norm: str = "relative-l2"
    budget: float = 0.25  # radius of the L2 ball (relative to the embedding's norm for relative-l2)
    steps: int = 30  # Adam steps per prompt
    lr: float = 0.01
    batch: int = 4  # noise draws per step
    seed: int = 0  # the attack's noise and timestep draws
    prompt_set: str = "memorized"

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"retrigger_objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"retrigger_norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.budget < 0 or self.steps < 0 or self.lr <= 0 or self.batch < 1:
            raise ConfigError("retrigger options: budget and steps must be >= 0, lr > 0, batch >= 1")


def options_of(suite: "Suite") -> RetriggerOptions | None:
    """The suite's attack options, or None when the suite has no re-trigger stage."""
    found = {k[len(PREFIX):]: v for k, v in suite.options.items() if k.startswith(PREFIX)}
    if not found:
        return None
    return config_from_dict(RetriggerOptions, found, owner=f"suite '{suite.name}' retrigger options")


# ---------------------------------------------------------------------------------------
# the attack on one prompt


class _FoundEmbedding:
    """Sampling hooks that hand the pipeline the attacker's embedding, then let the method
    act as it would: its own prompt_embeds on the found embedding, and every other hook
    (guidance schedule, guidance combination, initial-noise adjustment, per-step edits)
    exactly as in the method's own generation."""

    def __init__(self, method: "Method", embedding: torch.Tensor):
        self.method, self.embedding = method, embedding

    def prompt_embeds(self, pipe, cond, uncond, latents, settings, prompts):
        found = self.embedding.to(cond.device, cond.dtype).expand(cond.shape[0], -1, -1).contiguous()
        return self.method.prompt_embeds(pipe, found, uncond, latents, settings, prompts)

    def __getattr__(self, name: str):
        # every hook but the embedding is the method's own, including hooks added later
        if name == "method":  # not set yet (e.g. while copying): no recursion
            raise AttributeError(name)
        return getattr(self.method, name)


def _project(delta: torch.Tensor, radius: float) -> None:
    norm = float(delta.norm())
    if norm > radius > 0:
        delta.mul_(radius / norm)
    elif radius == 0:
        delta.zero_()


def attack_prompt(pipe: "PipelineAdapter", method: "Method", prompt: str, settings: "SamplerSettings",
                  opts: RetriggerOptions, target_latent: torch.Tensor | None, seed: int) -> dict[str, Any]:
    """Search the embedding of one prompt; returns the found embedding and the search's record.

    The method must already be applied to ``pipe``."""
    from diffusers import DDPMScheduler

    t0 = time.perf_counter()
    base = pipe.encode_prompts([prompt]).float()
    uncond1 = pipe.encode_prompts([""])
    scheduler = pipe.make_scheduler(settings.sampler)
    scheduler.set_timesteps(settings.steps, device=pipe.device)
    timesteps = list(scheduler.timesteps)
    alphas = DDPMScheduler.from_config(pipe.scheduler_config).alphas_cumprod.to(pipe.device)
    train_sched = type("Alphas", (), {"alphas_cumprod": alphas})()
    mask = torch.ones_like(base)
    mask[:, 0] = 0.0  # the BOS token's embedding is the same for every prompt: left alone
    radius = opts.budget * float((base * mask).norm()) if opts.norm == "relative-l2" else opts.budget
    delta = torch.zeros_like(base, requires_grad=True)
    optim = torch.optim.Adam([delta], lr=opts.lr)
    g = torch.Generator().manual_seed(int(seed))
    shape = pipe.latent_shape(settings.height, settings.width)
    state = pipe.state
    losses: list[float] = []
    calls = 0
    b = opts.batch
    if opts.objective == "denoise-target" and target_latent is None:
        raise ConfigError("retrigger objective 'denoise-target' needs the prompt's training image")
    with torch.no_grad():  # the method sees the request first, as a deployed pipeline would show it
        state.begin([prompt], [int(seed)], settings.steps)
        try:
            method.prompt_embeds(pipe, base.to(pipe.dtype), uncond1, pipe.initial_latents([int(seed)], settings, scheduler),
                                 settings, [prompt])
        finally:
            state.end()
    state.begin([prompt] * b, [int(seed)] * b, settings.steps)
    try:
        for _ in range(opts.steps if radius > 0 else 0):
            noise = torch.randn((b, *shape), generator=g).to(pipe.device)
            if opts.objective == "denoise-target":
                idx = torch.randint(0, len(timesteps), (1,), generator=g).item()
            else:
                idx = 0
            t = timesteps[idx]
            state.step_index, state.timestep = int(idx), int(t)
            cond = (base + delta * mask).to(pipe.dtype).expand(b, -1, -1)
            uncond = uncond1.expand(b, -1, -1)
            if opts.objective == "denoise-target":
                a = alphas[int(t)]
                x_t = (a.sqrt() * target_latent + (1 - a).sqrt() * noise).to(pipe.dtype)
            else:
                x_t = (noise * scheduler.init_noise_sigma).to(pipe.dtype)
            out = pipe.unet(torch.cat([x_t, x_t]), t, encoder_hidden_states=torch.cat([uncond, cond])).sample
            calls += 1
            out_u, out_c = out.float().chunk(2)
            if opts.objective == "denoise-target":
                guidance = method.guidance_scale(int(idx), settings.steps, settings.guidance)
                guided = out_u + guidance * (out_c - out_u)
                eps = pipe.to_epsilon(guided, x_t.float(), t, train_sched)
                loss = (eps - noise).pow(2).mean()
            else:
                eps_c = pipe.to_epsilon(out_c, x_t.float(), t, train_sched)
                eps_u = pipe.to_epsilon(out_u, x_t.float(), t, train_sched)
                loss = -(eps_c - eps_u).flatten(1).norm(dim=1).mean()
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            with torch.no_grad():
                delta.mul_(mask)
                _project(delta, radius)
            losses.append(float(loss.detach()))
    finally:
        state.end()
    found = (base + delta.detach() * mask).to(pipe.dtype)
    base_norm = float((base * mask).norm())
    return {
        "embedding": found.cpu(),
        "loss_first": losses[0] if losses else None,
        "loss_last": losses[-1] if losses else None,
        "delta_norm": float(delta.detach().norm()),
        "delta_rel": float(delta.detach().norm()) / max(base_norm, 1e-12),
        "radius": float(radius),
        "unet_calls": calls,
        "seconds": time.perf_counter() - t0,
    }


def target_latent_of(pipe: "PipelineAdapter", image: np.ndarray) -> torch.Tensor:
    """The VAE latent (mean, scaled) of a training image, at the sampler's resolution."""
    from memorybench.tinyworld.train import encode_latents

    scale = float(getattr(pipe.vae.config, "scaling_factor", 1.0))
    with torch.no_grad():
        return encode_latents(pipe.vae, image[None], pipe.device).to(pipe.device) * scale


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).convert("RGB").resize((width, height), Image.BICUBIC))


# ---------------------------------------------------------------------------------------
# the stage


def _cache_key(model_sha: str, method: "Method", opts: RetriggerOptions, suite: "Suite", prompts: list[str],
               seeds: list[int], dtype: str) -> str:
    return sha256_json({"stage": STAGE_VERSION, "model": model_sha, "method": method.name,
                        "config_sha256": method.config_sha256(), "options": asdict(opts),
                        "sampler": asdict(suite.sampler), "prompts": prompts, "seeds": seeds, "dtype": dtype})


def _prompt_path(root: Path | None, key: str, index: int) -> Path | None:
    # one checked file per prompt: a killed attack keeps every prompt it finished
    return Path(root) / CACHE_FOLDER / key[:32] / f"{index:04d}.npz" if root is not None else None


def _load(path: Path | None, prompt: str) -> tuple[np.ndarray, dict[str, Any]] | None:
    data = read_checked(path, "re-trigger attack") if path is not None else None
    if data is None:
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            record = json.loads(str(z["record"]))
            if record.get("prompt") != prompt:
                return None
            return z["images"], record
    except Exception:  # a damaged file is made again, never trusted
        discard(path)
        return None


def _save(path: Path | None, images: np.ndarray, record: dict[str, Any]) -> None:
    if path is None:
        return
    buf = io.BytesIO()
    np.savez(buf, images=images, record=np.array(json.dumps(record)))
    write_checked(path, buf.getvalue())


def attack_all(pipe: "PipelineAdapter", suite: "Suite", data: "SuiteData", method: "Method",
               opts: RetriggerOptions, cache_root: Path | None, progress: bool = False
               ) -> tuple[list[str], np.ndarray, list[dict[str, Any]], bool]:
    """Attack every prompt of the set (through the cache); returns prompts, images
    (P, S, H, W, 3), per-prompt records and whether it came from the cache."""
    from tqdm.auto import tqdm

    from memorybench.run.finetune import suite_finetune

    s = suite.sampler
    prompts = list(data.prompts.get(opts.prompt_set, []))
    if not prompts:
        raise ConfigError(f"suite '{suite.name}': the re-trigger stage needs prompt set '{opts.prompt_set}'")
    seeds = list(data.seeds[opts.prompt_set])
    finetune = suite_finetune(pipe, suite, data, method, cache_root or Path(".memorybench-retrigger"), progress)
    model_sha = finetune.weights_key(method) if finetune else pipe.weights_sha256
    key = _cache_key(model_sha, method, opts, suite, prompts, seeds, pipe.dtype_name)
    paths = [_prompt_path(cache_root, key, i) for i in range(len(prompts))]
    done = {i: got for i, p in enumerate(prompts) if (got := _load(paths[i], p)) is not None}
    todo = [i for i in range(len(prompts)) if i not in done]
    targets = {}
    if todo and opts.objective == "denoise-target":
        for i in todo:
            image = data.source_image(prompts[i])
            if image is None:
                raise ConfigError(f"suite '{suite.name}': no training image for memorized prompt {prompts[i]!r} "
                                  "(retrigger_objective 'denoise-target' needs one)")
            targets[i] = target_latent_of(pipe, _resize(np.asarray(image), s.height, s.width))
    ctx = MethodContext(seed=0, settings=s, calibration_prompts=list(data.calibration_prompts))
    if todo:
        with (finetune.applied(method, ctx) if finetune else contextlib.nullcontext(0.0)), \
                apply_method(method, pipe, ctx):
            bar = tqdm(todo, desc=f"re-trigger [{method.name}]", unit="prompt", disable=not progress,
                       file=sys.stderr)
            for i in bar:
                p = prompts[i]
                with torch.enable_grad():
                    rec = attack_prompt(pipe, method, p, s, opts, targets.get(i), opts.seed * 100003 + i)
                t0 = time.perf_counter()
                imgs = pipe.generate([p] * len(seeds), seeds, s, method=_FoundEmbedding(method, rec.pop("embedding")))
                rec["generation_seconds"] = time.perf_counter() - t0
                rec["generation_unet_calls"] = s.steps  # one batched CFG call per sampler step
                rec["prompt"] = p
                _save(paths[i], imgs, rec)
                done[i] = (imgs, rec)
            bar.close()
    images = [done[i][0] for i in range(len(prompts))]
    records = [done[i][1] for i in range(len(prompts))]
    return prompts, np.stack(images), records, not todo


def retrigger_metrics(pipe: "PipelineAdapter", suite: "Suite", data: "SuiteData", method: "Method",
                      start_values: dict[str, float] | None, threshold: float | None,
                      cache_root: Path | None, progress: bool = False) -> dict[str, MetricValue]:
    """The stage's columns for one method (see the module docstring)."""
    from memorybench.metrics.sscd import SSCDEmbedder

    opts = options_of(suite)
    if opts is None:
        return {}
    prompts, images, records, from_cache = attack_all(pipe, suite, data, method, opts, cache_root, progress)
    embedder = SSCDEmbedder("default", progress=False)
    sources = [data.source_image(p) for p in prompts]
    if any(src is None for src in sources):
        raise ConfigError(f"suite '{suite.name}': the re-trigger stage needs each memorized prompt's training image")
    src_emb = embedder.embed([np.asarray(x) for x in sources])
    p_count, s_count = images.shape[:2]
    gen_emb = embedder.embed(images.reshape(-1, *images.shape[2:])).reshape(p_count, s_count, -1)
    attacked = np.clip(np.einsum("psd,pd->ps", gen_emb, src_emb), -1.0, 1.0).max(axis=1)
    if start_values is None:  # no sscd_mem column in this suite: the attack's own start is not scored
        start = np.full(p_count, -1.0)
    else:
        start = np.array([start_values[p] for p in prompts])
    value = np.maximum(start, attacked)
    thr = float(threshold if threshold is not None else DEFAULT_THRESHOLD)
    hit = (value > thr).astype(np.float64)
    kw = {"n_resamples": DEFAULT_RESAMPLES, "seed": DEFAULT_SEED}
    boot = {"unit": "prompt", "resamples": DEFAULT_RESAMPLES, "seed": DEFAULT_SEED, "interval": "percentile 95%"}
    protocol = {"attack": {**asdict(opts), "stage_version": STAGE_VERSION,
                           "reference": "Kowalczuk, Hintersdorf, Struppek et al., Finding Dori: Memorization in "
                                        "Text-to-Image Diffusion Models Is Not Local (ICML 2026)"},
                "bootstrap": boot, "from_cache": from_cache}
    impl = f"retrigger-v{STAGE_VERSION}+{embedder.implementation}"

    def mv(values: np.ndarray, higher: bool, agg: str, extra: dict | None = None) -> MetricValue:
        v, lo, hi = mean_with_ci(values, **kw)
        return MetricValue(value=float(v), n=len(values), ci_low=lo, ci_high=hi, higher_is_better=higher,
                           implementation=impl, protocol={**protocol, "aggregation": agg, **(extra or {})},
                           per_prompt={p: float(x) for p, x in zip(prompts, values)})

    calls = np.array([r["unet_calls"] + r["generation_unet_calls"] for r in records], dtype=np.float64)
    secs = np.array([r["seconds"] + r["generation_seconds"] for r in records], dtype=np.float64)
    return {
        "retrigger_sscd_mem": mv(value, False, "mean over prompts of max(sscd_mem of the prompt, max over seeds of "
                                 "SSCD to source of generations from the found embedding)",
                                 {"attacked_only_mean": float(attacked.mean())}),
        "retrigger_copy_rate": mv(hit, False, "share of prompts whose re-trigger SSCD exceeds the copy threshold",
                                  {"threshold": thr}),
        "retrigger_delta_rel": mv(np.array([r["delta_rel"] for r in records]), True,
                                  "mean over prompts of ||found - prompt embedding|| / ||prompt embedding||"),
        "retrigger_unet_calls": mv(calls, True, "per prompt: batched UNet calls of the search (forward + backward) "
                                   "and of the generation (one CFG call per sampler step)"),
        "retrigger_seconds": mv(secs, True, "per prompt: seconds of search and generation"
                                + (" (measured when first computed; served from the cache)" if from_cache else "")),
    }


__all__ = ["RetriggerOptions", "options_of", "attack_prompt", "attack_all", "retrigger_metrics"]
