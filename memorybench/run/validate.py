"""``memorybench validate``: the reversibility and config contract of a method.

Applies the method to a tiny random-weights SD pipeline, runs a short generation so
every hook fires, removes it, and fails unless the weights are bit-identical, the
attention processors are the very same objects, and the config round-trips through JSON.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch

from memorybench.core.config import config_from_dict
from memorybench.api.method import Method, MethodContext, apply_method
from memorybench.model.pipeline import PipelineAdapter, SamplerSettings


@dataclass
class ValidationReport:
    method: str
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(passed for _, passed, _ in self.checks)

    def add(self, name: str, passed: bool, detail: str = "") -> None:
        self.checks.append((name, passed, detail))

    def lines(self) -> list[str]:
        return [f"{'PASS' if ok else 'FAIL'}  {name}" + (f": {detail}" if detail else "") for name, ok, detail in self.checks]


def _tensor_hashes(pipe: PipelineAdapter) -> dict[str, str]:
    out = {}
    for mod_name, module in pipe.modules().items():
        for key, tensor in module.state_dict().items():
            data = tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes()
            out[f"{mod_name}.{key}"] = hashlib.sha256(data).hexdigest()
    return out


def validate_method(method_cls: type[Method], settings: dict | None = None,
                    pipe: PipelineAdapter | None = None, resolution: int = 32) -> ValidationReport:
    """Check a method on ``pipe`` (default: the tiny random pipeline built in code; e.g. a
    random-weights SD 1.5 / 2.1 / SDXL folder with ``--model``) at ``resolution`` pixels."""
    report = ValidationReport(method_cls.name)

    # 1. config round trip through JSON text
    method = method_cls.from_settings(settings or {})
    text = json.dumps(method.config_dict())
    again = config_from_dict(method_cls.Config, json.loads(text), owner=f"method '{method_cls.name}'")
    report.add("config round-trips through JSON", again == method.config, text)

    # 2. apply, generate, remove on a tiny pipeline
    pipe = pipe or PipelineAdapter.dummy(seed=0)
    before = _tensor_hashes(pipe)
    processors_before = dict(pipe.unet.attn_processors)
    settings_ = SamplerSettings(sampler="ddim", steps=3, guidance=7.5, height=resolution, width=resolution)
    prompts = ["a photo of a red cat", "a painting of a house"]
    baseline = pipe.generate(prompts, [0, 1], settings_)
    ctx = MethodContext(seed=0, settings=settings_, calibration_prompts=["a photo of a dog", "an old city street"])
    try:
        with apply_method(method, pipe, ctx):
            edited = pipe.generate(prompts, [0, 1], settings_, method=method)
        report.add("apply, generate and remove run", True, f"images {tuple(edited.shape)}")
    except Exception as exc:  # the method's own bug: report, don't crash validate
        report.add("apply, generate and remove run", False, f"{type(exc).__name__}: {exc}")
        return report
    if type(method).adjust_initial_latents is not Method.adjust_initial_latents:
        _check_initial_latents(method, pipe, settings_, prompts, report)

    after = _tensor_hashes(pipe)
    changed = sorted(k for k in before if before[k] != after.get(k))
    report.add("weights restored bit-exactly", not changed,
               f"{len(changed)} tensor(s) differ, e.g. {changed[:3]}" if changed else f"{len(before)} tensors")
    processors_after = pipe.unet.attn_processors
    moved = sorted(k for k in processors_before if processors_after.get(k) is not processors_before[k])
    report.add("attention processors restored", not moved,
               f"{len(moved)} differ, e.g. {moved[:3]}" if moved else f"{len(processors_before)} processors")
    restored = pipe.generate(prompts, [0, 1], settings_)
    report.add("generation after removal equals generation before", bool((restored == baseline).all()))
    if method.kind == "training":
        if pipe.is_sdxl:  # the suite fine-tune loop conditions on text only (no pooled embeddings)
            report.add("training hook runs inside a fine-tune", True, "not checked: suite fine-tunes do not train SDXL")
        else:
            _check_training_hook(method, pipe, before, report)
    return report


def _check_initial_latents(method: Method, pipe: PipelineAdapter, settings: SamplerSettings, prompts: list[str],
                           report: ValidationReport) -> None:
    """``adjust_initial_latents``: same shape and dtype, finite, and each row a function of its
    own prompt and seed (the second image adjusted alone equals it adjusted in the batch)."""
    seeds = [0, 1]
    try:
        with apply_method(method, pipe, MethodContext(seed=0, settings=settings)):
            scheduler = pipe.make_scheduler(settings.sampler)
            scheduler.set_timesteps(settings.steps, device=pipe.device)
            outs = []
            for rows in (slice(0, 2), slice(1, 2)):
                pipe.state.begin(prompts[rows], seeds[rows], settings.steps)
                try:
                    x = pipe.initial_latents(seeds[rows], settings, scheduler)
                    cond, uncond = pipe.encode_prompts(prompts[rows]), pipe.encode_prompts([""] * len(prompts[rows]))
                    out = method.adjust_initial_latents(pipe, x, cond, uncond, settings)
                finally:
                    pipe.state.end()
                if out.shape != x.shape or out.dtype != x.dtype or not bool(torch.isfinite(out).all()):
                    report.add("adjust_initial_latents keeps shape, dtype and finite values", False,
                               f"got {tuple(out.shape)} {out.dtype} for {tuple(x.shape)} {x.dtype}")
                    return
                outs.append(out)
        gap = float((outs[0][1] - outs[1][0]).abs().max())
        report.add("adjust_initial_latents keeps shape, dtype and finite values", True)
        report.add("adjust_initial_latents: a row depends only on its prompt and seed", gap <= 1e-3,
                   f"max difference alone vs in a batch {gap:.2e}")
    except Exception as exc:
        report.add("adjust_initial_latents runs", False, f"{type(exc).__name__}: {exc}")


def _check_training_hook(method: Method, pipe: PipelineAdapter, before: dict[str, str], report: ValidationReport) -> None:
    """A training method inside a 3-step fine-tune of the tiny pipeline: runs, and is undone."""
    import tempfile

    import numpy as np

    from memorybench.suites.finetune import FinetuneRecipe, FinetuneSet
    from memorybench.run.finetune import SuiteFinetune

    rng = np.random.default_rng(0)
    images = np.repeat(np.repeat(rng.integers(0, 256, (4, 4, 4, 3)), 8, 1), 8, 2).astype(np.uint8)
    data = FinetuneSet(images=images, captions=["a photo of a red cat", "a painting of a house", "a blue car",
                                                "an old city street"],
                       dup_counts=np.array([5, 1, 1, 1]), protected=np.array([0]), sha256="validate")
    ctx = MethodContext(seed=0)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            with SuiteFinetune(pipe, FinetuneRecipe(steps=3, batch=2, warmup=1), data, tmp, progress=False).applied(method, ctx):
                pass
        report.add("training hook runs inside a fine-tune", True, f"report keys {sorted(ctx.report)}")
    except Exception as exc:
        report.add("training hook runs inside a fine-tune", False, f"{type(exc).__name__}: {exc}")
        return
    changed = sorted(k for k, v in _tensor_hashes(pipe).items() if before.get(k) != v)
    report.add("weights restored bit-exactly after the fine-tune", not changed,
               f"{len(changed)} tensor(s) differ, e.g. {changed[:3]}" if changed else "")
