"""Suite fine-tunes: training that every method's model goes through before generation.

A suite whose options hold a fine-tune recipe (``finetune_steps``, ``finetune_lr``, ...;
e.g. finetune-dup-v1; :class:`memorybench.suites.finetune.FinetuneRecipe`) fine-tunes the
base model on its fine-tuning set (the suite's data source puts a ``FinetuneSet`` in
``SuiteData.finetune_set``) before any image is generated, for every method:

* ``none`` and every non-training method get the plain fine-tune (the baseline);
* a method of kind ``"training"`` plugs into the loop through
  ``Method.training_hook(pipe, ctx, job)``: it sees a :class:`~memorybench.api.method.FinetuneJob`
  (the trained parameters and a forward pass over the protected samples) and returns a
  :class:`~memorybench.api.method.TrainingHook` that may edit gradients before each optimizer
  step and parameters after it.

The loop reuses the tiny world's training pieces (VAE latents, noise schedule, epsilon
loss, warmup-cosine LR, optional weight EMA; :mod:`memorybench.tinyworld.train`); the text
encoder stays frozen (captions are encoded once), and caption dropout keeps
classifier-free guidance working. ``finetune_steps: 0`` measures the base model through
the same path (the "before fine-tuning" row).
Fine-tuned weights are cached content-addressed (base weights sha256 + recipe + fine-tune
data + the method's name and config hash for training methods) as safetensors under
``CACHE/finetune/``, so re-runs and resumed runs reuse them; the fine-tune's seconds are
recorded there and reported as the method's preparation cost. The base weights come back
bit-identical when the run ends.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch

from memorybench.api.method import FinetuneJob
from memorybench.core.config import sha256_json
from memorybench.core.io import read_checked, write_checked
from memorybench.errors import ConfigError, PluginError
from memorybench.suites.finetune import TRAIN_CHOICES, FinetuneRecipe, FinetuneSet

if TYPE_CHECKING:
    from memorybench.api.method import Method, MethodContext
    from memorybench.model.pipeline import PipelineAdapter
    from memorybench.suites.data import SuiteData
    from memorybench.suites.spec import Suite

CACHE_FOLDER = "finetune"
_METADATA_KEY = "memorybench_finetune"


def trainable_parameters(pipe: "PipelineAdapter", train: str) -> dict[str, torch.nn.Parameter]:
    """The UNet parameters a recipe's ``train`` setting fine-tunes, named "unet.<name>"."""
    unet = pipe.unet
    if train == "unet":
        return {f"unet.{n}": p for n, p in unet.named_parameters()}
    if train == "unet-attention":
        out = {}
        for block_name, block in pipe.transformer_blocks():
            out.update({f"unet.{block_name}.{n}": p for n, p in block.named_parameters()})
        return out
    if train == "unet-linear":
        return {f"unet.{m}.{n}": p for m, mod in unet.named_modules() if isinstance(mod, torch.nn.Linear)
                for n, p in mod.named_parameters(recurse=False)}
    raise ConfigError(f"fine-tune recipe: train must be one of {', '.join(TRAIN_CHOICES)}, got {train!r}")


def _owning_modules(pipe: "PipelineAdapter", params: dict[str, torch.nn.Parameter]) -> dict[str, torch.nn.Module]:
    ids = {id(p) for p in params.values()}
    return {f"unet.{m}": mod for m, mod in pipe.unet.named_modules()
            if any(id(p) in ids for p in mod.parameters(recurse=False))}


class SuiteFinetune:
    """The fine-tune of one suite on one model: identity, cache and the training loop."""

    def __init__(self, pipe: "PipelineAdapter", recipe: FinetuneRecipe, data: FinetuneSet,
                 cache_root: str | Path, progress: bool = True):
        self.pipe, self.recipe, self.data = pipe, recipe, data
        self.cache_root = Path(cache_root)
        self.progress = progress

    # -- identity ---------------------------------------------------------------------
    @property
    def model_sha256(self) -> str:
        """Identity of "base weights + this fine-tune" (what generations are keyed on)."""
        return sha256_json({"base_weights": self.pipe.weights_sha256, "recipe": self.recipe.to_dict(),
                            "finetune_data": self.data.sha256})

    def weights_key(self, method: "Method") -> str:
        """Identity of the fine-tuned weights: training methods change them, others share the plain one."""
        who = {"method": method.name, "config_sha256": method.config_sha256()} if method.kind == "training" else "plain"
        return sha256_json({"model": self.model_sha256, "training": who})

    def cache_path(self, method: "Method") -> Path:
        return self.cache_root / CACHE_FOLDER / f"{self.weights_key(method)[:32]}.safetensors"

    # -- apply ------------------------------------------------------------------------
    @contextlib.contextmanager
    def applied(self, method: "Method", ctx: "MethodContext") -> Iterator[float]:
        """Fine-tune (or load the cached fine-tune) for the block; yields its seconds.

        The trained parameters are copied first and copied back on exit, so the base
        weights come back bit-identical whatever happens inside the block."""
        params = trainable_parameters(self.pipe, self.recipe.train)
        originals = {n: p.detach().clone() for n, p in params.items()}
        try:
            path = self.cache_path(method)
            record = self._load(path, params)
            if record is None:
                record = self._train(params, method, ctx)
                self._save(path, params, record)
                record["from_cache"] = False
            else:
                record["from_cache"] = True
                ctx.report.update(record.get("method_report", {}))
            ctx.report["finetune"] = {k: v for k, v in record.items() if k != "method_report"}
            yield float(record["seconds"])
        finally:
            with torch.no_grad():
                for name, p in params.items():
                    p.copy_(originals[name])
                    p.requires_grad_(False)
            self.pipe.unet.eval()

    # -- cache ------------------------------------------------------------------------
    def _save(self, path: Path, params: dict[str, torch.nn.Parameter], record: dict[str, Any]) -> None:
        from safetensors.torch import save

        tensors = {n: p.detach().cpu().contiguous() for n, p in params.items()}
        write_checked(path, save(tensors, metadata={_METADATA_KEY: json.dumps(record, sort_keys=True)}))

    def _load(self, path: Path, params: dict[str, torch.nn.Parameter]) -> dict[str, Any] | None:
        """Copy cached weights into ``params``; None when absent, damaged (checked against the
        sha256 kept beside them) or not made for them."""
        if read_checked(path, "fine-tuned weights") is None:
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                record = json.loads((f.metadata() or {}).get(_METADATA_KEY, "null"))
                if not isinstance(record, dict) or set(f.keys()) != set(params):
                    return None
                tensors = {n: f.get_tensor(n) for n in params}
        except Exception:  # a damaged cache file is rebuilt, never trusted
            return None
        if any(tensors[n].shape != p.shape or tensors[n].dtype != p.dtype for n, p in params.items()):
            return None
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(tensors[n].to(p.device))
        return record

    # -- training ---------------------------------------------------------------------
    def _train(self, params: dict[str, torch.nn.Parameter], method: "Method", ctx: "MethodContext") -> dict[str, Any]:
        from diffusers import DDPMScheduler
        from tqdm.auto import tqdm

        from memorybench.tinyworld.train import (
            diffusion_target,
            ema_update,
            encode_latents,
            noised,
            warmup_cosine,
        )

        pipe, recipe, data = self.pipe, self.recipe, self.data
        if pipe.dtype != torch.float32:
            raise ConfigError("fine-tuning runs in fp32: pass --dtype fp32")
        t0 = time.perf_counter()
        device = pipe.device
        scale = float(getattr(pipe.vae.config, "scaling_factor", 1.0))
        h, w = data.images.shape[1:3]
        latents = encode_latents(pipe.vae, data.images, device, batch=max(1, 2**20 // (h * w))).to(device) * scale
        with torch.no_grad():  # the text encoder is frozen: encode every caption once
            text = torch.cat([pipe.encode_prompts(data.captions[i:i + 256]) for i in range(0, len(data.captions), 256)])
            null = pipe.encode_prompts([""])
        alphas = DDPMScheduler.from_config(pipe.scheduler_config).alphas_cumprod.to(device)

        def fixed_loss(indices: np.ndarray, draws: int, seed: int, keep_loss: bool = True) -> float:
            """Loss over ``indices`` at ``draws`` evenly spread timesteps each, fixed noise."""
            g = torch.Generator().manual_seed(seed)
            idx = torch.as_tensor(np.repeat(indices, draws))
            t_all = ((torch.arange(draws) + 0.5) * (len(alphas) / draws)).long().repeat(len(indices))
            total, n = 0.0, 0
            with torch.no_grad():
                for s in range(0, len(idx), recipe.batch):
                    i, t = idx[s:s + recipe.batch].to(device), t_all[s:s + recipe.batch].to(device)
                    x0 = latents[i]
                    noise = torch.randn(x0.shape, generator=g).to(device)
                    a = alphas[t].view(-1, 1, 1, 1)
                    pred = pipe.unet(a.sqrt() * x0 + (1 - a).sqrt() * noise, t, text[i]).sample
                    if keep_loss:
                        target = diffusion_target(x0, noise, a, pipe.prediction_type)
                        total += float((pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3)).sum())
                    n += len(i)
            return total / max(1, n)

        general = np.setdiff1d(np.arange(len(data.captions)), data.protected)[:64]
        probe_seed = recipe.seed + 1
        before = {"protected": fixed_loss(data.protected, 8, probe_seed),
                  "general": fixed_loss(general, 2, probe_seed) if len(general) else None}

        for p in params.values():
            p.requires_grad_(True)
        job = FinetuneJob(recipe=recipe, parameters=params, modules=_owning_modules(pipe, params),
                          protected_captions=data.protected_captions,
                          run_protected=lambda draws: fixed_loss(data.protected, int(draws), probe_seed + 1, False))
        report_keys = set(ctx.report)
        hook = method.training_hook(pipe, ctx, job) if method.kind == "training" else None
        method_report = {k: v for k, v in ctx.report.items() if k not in report_keys}

        opt = torch.optim.AdamW(list(params.values()), lr=recipe.lr, weight_decay=recipe.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(recipe.warmup, max(1, recipe.steps)))
        g = torch.Generator().manual_seed(recipe.seed)
        weights = torch.as_tensor(np.asarray(data.dup_counts), dtype=torch.float64)
        trained = list(params.values())
        ema = [p.detach().clone() for p in trained] if recipe.ema > 0 else None
        losses: list[float] = []
        weighted_out: list[int] = []  # samples a hook's sample_weights left out, per step
        bar = tqdm(range(recipe.steps), desc=f"fine-tune [{method.name}]", unit="step", disable=not self.progress,
                   file=sys.stderr)
        pipe.unet.train()
        try:
            for step in bar:
                idx = torch.multinomial(weights, recipe.batch, replacement=True, generator=g)
                drop = (torch.rand(recipe.batch, generator=g) < recipe.caption_dropout).to(device)
                idx = idx.to(device)
                emb = torch.where(drop[:, None, None], null, text[idx])
                x0 = latents[idx]
                xt, t, noise, a = noised(x0, alphas, g)
                pred = pipe.unet(xt, t, emb).sample
                target = diffusion_target(x0, noise, a, pipe.prediction_type)
                w = hook.sample_weights(xt, t, emb, pipe.unet, pred.detach()) if hook is not None else None
                if w is None:  # the plain mean (bit for bit as without a hook)
                    loss = torch.nn.functional.mse_loss(pred.float(), target.float())
                else:
                    w = _checked_weights(w, len(idx), method.name).to(device)
                    per_sample = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
                    weighted_out.append(int((w == 0).sum()))
                    if float(w.sum()) == 0.0:  # every sample left out: no update this step
                        losses.append(float(per_sample.detach().mean()))
                        if ema is not None:
                            ema_update(ema, trained, step, recipe.ema)
                        continue
                    loss = (per_sample * w).sum() / w.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if hook is not None:
                    hook.before_step(step)
                if recipe.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(list(params.values()), recipe.grad_clip)
                opt.step()
                sched.step()
                if hook is not None:
                    with torch.no_grad():
                        hook.after_step(step)
                if ema is not None:
                    ema_update(ema, trained, step, recipe.ema)
                losses.append(float(loss.detach()))
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-10:]):.4f}")
        finally:
            bar.close()
            pipe.unet.eval()
        if ema is not None:  # the moving average is the fine-tuned model
            with torch.no_grad():
                for p, e in zip(trained, ema):
                    p.copy_(e)
        after = {"protected": fixed_loss(data.protected, 8, probe_seed),
                 "general": fixed_loss(general, 2, probe_seed) if len(general) else None}
        tenth = max(1, len(losses) // 10)
        n_trained = sum(p.numel() for p in params.values())
        sample_weighting = {} if not weighted_out else {"sample_weights": {
            "samples_left_out": int(sum(weighted_out)), "samples_seen": int(len(weighted_out) * recipe.batch),
            "steps_without_update": int(sum(n == recipe.batch for n in weighted_out))}}
        return {
            "seconds": time.perf_counter() - t0,
            "recipe": recipe.to_dict(),
            "base_weights_sha256": pipe.weights_sha256,
            "finetune_data_sha256": data.sha256,
            "trained_parameters": int(n_trained),
            "training": method.name if method.kind == "training" else "plain",
            "loss_first_tenth": float(np.mean(losses[:tenth])) if losses else None,
            "loss_last_tenth": float(np.mean(losses[-tenth:])) if losses else None,
            "loss_curve": [round(float(np.mean(losses[i:i + 25])), 5) for i in range(0, len(losses), 25)],
            "probe_loss_before": before,
            "probe_loss_after": after,
            "probe": "epsilon MSE at fixed noise: protected images x 8 timesteps, 64 other images x 2",
            "hardware": {"device": str(device), "torch_threads": torch.get_num_threads()},
            "method_report": method_report,
            **sample_weighting,
        }


def _checked_weights(w: Any, batch: int, method: str) -> torch.Tensor:
    """A hook's per-sample weights as a float tensor, or a one-line error naming the method."""
    if not torch.is_tensor(w) or w.shape != (batch,):
        raise PluginError(f"method '{method}': sample_weights must return None or a tensor of shape ({batch},), "
                          f"got {getattr(w, 'shape', type(w).__name__)}")
    w = w.detach().float()
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise PluginError(f"method '{method}': sample_weights must be finite and >= 0")
    return w


def suite_finetune(pipe: "PipelineAdapter", suite: "Suite", data: "SuiteData", method: "Method",
                   cache_root: str | Path, progress: bool = True) -> SuiteFinetune | None:
    """The suite's fine-tune for this run, or None for suites that do not fine-tune."""
    recipe = suite.finetune_recipe()
    if recipe is None:
        if method.kind == "training":
            raise ConfigError(f"method '{method.name}' acts during training: run it on a suite that fine-tunes "
                              f"the model (e.g. finetune-dup-v1); suite '{suite.name}' does not")
        return None
    ft_set = data.finetune_set
    if not isinstance(ft_set, FinetuneSet):
        raise ConfigError(f"suite '{suite.name}' has a fine-tune recipe but its data source '{suite.data}' "
                          "gives no fine-tuning set")
    return SuiteFinetune(pipe, recipe, ft_set, cache_root, progress)


__all__ = ["SuiteFinetune", "suite_finetune", "trainable_parameters"]
