"""The method plugin API.

A mitigation method is a ``Method`` subclass with a name, a kind, a dataclass ``Config``
and any of these hooks:

- ``prepare(pipe, ctx)``: edit weights or fine-tune once before generation. Edit through
  ``ctx.set_parameter`` / ``ctx.stash_module`` so the harness can undo it;
- ``attention_processors(pipe)``: processors for cross-attention (``.attn2.``) keys only;
- ``prompt_embeds(pipe, cond, uncond, latents, settings, prompts)``: change the text
  condition per batch (e.g. optimise it against the initial noise);
- ``adjust_initial_latents(pipe, latents, cond, uncond, settings)``: replace the initial
  noise of a batch before the first step (e.g. search or optimise it against the prompt);
  rows follow ``pipe.state.prompts`` / ``pipe.state.seeds``, and each row must depend only
  on its own prompt and seed;
- ``guidance_scale(step, num_steps, default)``: per-step classifier-free guidance;
- ``combine_guidance(pipe, step, t, prediction, guidance)``: how the two CFG halves of a
  step become the noise prediction the scheduler uses (default
  ``prediction.uncond + guidance * (prediction.cond - prediction.uncond)``); sees the
  scheduler's timestep ``t`` and both halves, e.g. to switch guidance on a timestep or on
  the text-noise magnitude, per image;
- ``on_step(pipe, step, t, latents)``: change latents after each scheduler step;
- ``training_hook(pipe, ctx, job)`` (kind ``"training"``): on suites that fine-tune the model
  before generation (e.g. finetune-dup-v1), called once before the fine-tune with a
  :class:`FinetuneJob` (trained parameters, a forward pass over the
  protected samples); returns a :class:`TrainingHook` whose ``before_step`` may edit
  gradients and ``after_step`` parameters, or None.

``apply_method`` applies a method and undoes every edit on exit: the weights come back
bit-identical and the attention processors are the same objects as before.
``memorybench validate NAME`` checks that contract.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Literal

import torch

from memorybench.api.builtins import BUILTIN_METHODS
from memorybench.api.registry import Registry
from memorybench.core.config import ConfiguredPlugin
from memorybench.model.hooks import installed_processors

if TYPE_CHECKING:
    from memorybench.model.pipeline import CFGPrediction, PipelineAdapter, SamplerSettings
    from memorybench.suites.finetune import FinetuneRecipe

MethodKind = Literal["weight-edit", "inference", "training"]
METHOD_KINDS = ("weight-edit", "inference", "training")


@dataclass
class MethodContext:
    """What ``prepare`` may use, and the record of what it changed."""

    seed: int = 0
    settings: "SamplerSettings | None" = None  # the suite's sampler, for methods that sample in prepare
    # Prompts the method may fit itself on (e.g. Wanda's mask-finding subset); the suite
    # excludes them from evaluation.
    calibration_prompts: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)  # method's own figures -> result JSON
    _saved_params: dict[int, tuple[torch.nn.Parameter, torch.Tensor]] = field(default_factory=dict)
    _saved_modules: list[tuple[torch.nn.Module, dict[str, torch.Tensor]]] = field(default_factory=list)

    def set_parameter(self, param: torch.nn.Parameter, new_value: torch.Tensor) -> None:
        """Overwrite ``param`` in place, remembering its original value once."""
        key = id(param)
        if key not in self._saved_params:
            self._saved_params[key] = (param, param.detach().clone())
        with torch.no_grad():
            param.copy_(new_value)

    def stash_module(self, module: torch.nn.Module) -> None:
        """Remember a module's whole state (for fine-tuning), restored on removal."""
        self._saved_modules.append((module, {k: v.detach().clone() for k, v in module.state_dict().items()}))

    def restore(self) -> None:
        with torch.no_grad():
            for param, original in self._saved_params.values():
                param.copy_(original)
            for module, state in reversed(self._saved_modules):
                module.load_state_dict(state)
        self._saved_params.clear()
        self._saved_modules.clear()


class TrainingHook:
    """What a training-time method does inside a suite's fine-tune loop (all no-ops here).

    ``sample_weights(...)`` runs after the step's forward pass and before its loss is
    averaged over the batch (weigh or leave out single samples); ``before_step(step)`` runs
    after the backward pass and before the optimizer step (edit each trained parameter's
    ``.grad`` in place); ``after_step(step)`` runs after the optimizer step (edit parameters
    in place, under ``torch.no_grad``)."""

    def sample_weights(self, latents_noisy: torch.Tensor, timesteps: torch.Tensor, text_embeddings: torch.Tensor,
                       unet: torch.nn.Module, prediction: torch.Tensor) -> torch.Tensor | None:
        """Per-sample weights of this step's loss, or None (the default: the plain mean).

        Gets the step's batch: the noised latents ``x_t`` (B, C, H, W), their timesteps (B,),
        the text embeddings the UNet sees (B, L, D; rows of dropped captions are the empty
        caption's), the UNet (in training mode; call it under ``torch.no_grad``) and its
        prediction for the batch (detached). Returns a (B,) tensor of weights >= 0: the
        step's loss becomes ``sum(w_i * mse_i) / sum(w_i)``, so a weight of 0 leaves the
        sample out of this step; when every weight is 0 the step makes no update at all.
        Returning None keeps the loss (and its bits) exactly as without the hook."""
        return None

    def before_step(self, step: int) -> None:
        pass

    def after_step(self, step: int) -> None:
        pass


@dataclass
class FinetuneJob:
    """What a training-time method sees before the suite's fine-tune starts."""

    recipe: "FinetuneRecipe"
    parameters: dict[str, torch.nn.Parameter]  # trained parameters, named "unet.<name>"
    modules: dict[str, torch.nn.Module]  # modules that own trained parameters, named "unet.<name>"
    protected_captions: list[str]
    # run_protected(draws): the fine-tune's forward pass (noised latent + caption, no
    # gradients) over every protected sample, `draws` times each at evenly spread
    # timesteps. Hook modules around it to see their inputs on the protected samples.
    run_protected: Callable[[int], None]


class Method(ConfiguredPlugin):
    """Base class of mitigation methods. Subclass, set the class attributes, register."""

    plugin_kind: ClassVar[str] = "method"
    kind: ClassVar[MethodKind] = "inference"
    description: ClassVar[str] = ""

    # -- hooks (all optional) -------------------------------------------------------------
    def prepare(self, pipe: "PipelineAdapter", ctx: MethodContext) -> None:
        """Edit weights or fine-tune before generation (use ctx.set_parameter/stash_module)."""

    def attention_processors(self, pipe: "PipelineAdapter") -> dict[str, Any]:
        """Processors to install on cross-attention keys (each key must contain '.attn2.')."""
        return {}

    def prompt_embeds(self, pipe: "PipelineAdapter", cond: torch.Tensor, uncond: torch.Tensor,
                      latents: torch.Tensor, settings: "SamplerSettings", prompts: list[str]) -> torch.Tensor:
        return cond

    def adjust_initial_latents(self, pipe: "PipelineAdapter", latents: torch.Tensor, cond: torch.Tensor,
                               uncond: torch.Tensor, settings: "SamplerSettings") -> torch.Tensor:
        """The batch's initial noise (already scaled by the scheduler), returned changed or as is."""
        return latents

    def guidance_scale(self, step: int, num_steps: int, default: float) -> float:
        return default

    def combine_guidance(self, pipe: "PipelineAdapter", step: int, t: Any, prediction: "CFGPrediction",
                         guidance: float) -> torch.Tensor:
        """The noise prediction of one step from both CFG halves (``guidance`` is ``guidance_scale``'s)."""
        return prediction.guided(guidance)

    def on_step(self, pipe: "PipelineAdapter", step: int, t: Any, latents: torch.Tensor) -> torch.Tensor:
        return latents

    def training_hook(self, pipe: "PipelineAdapter", ctx: MethodContext, job: "FinetuneJob") -> TrainingHook | None:
        """Plug into the suite's fine-tune (kind "training"); figures go into ``ctx.report``."""
        return None

    def remove(self, pipe: "PipelineAdapter", ctx: MethodContext) -> None:
        """Undo anything not done through ``ctx`` (override if you need to)."""


def check_method_class(cls: Any) -> None:
    """Reject a malformed method class at registration, naming the problem."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"{cls!r} is not a memorybench Method subclass")
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")
    if cls.kind not in METHOD_KINDS:
        raise TypeError(f"method '{cls.name}': kind must be one of {METHOD_KINDS}, got {cls.kind!r}")
    if not dataclasses.is_dataclass(cls.Config):
        raise TypeError(f"method '{cls.name}': Config must be a dataclass")


@dataclass
class AppliedMethod:
    method: Method
    ctx: MethodContext
    prepare_seconds: float


@contextlib.contextmanager
def apply_method(method: Method, pipe: "PipelineAdapter", ctx: MethodContext | None = None) -> Iterator[AppliedMethod]:
    """Apply ``method`` to ``pipe`` for the duration of the block, then undo it."""
    ctx = ctx or MethodContext()
    start = time.perf_counter()
    # the processors are snapshot before prepare(), so even ones a method swaps by hand come back
    with installed_processors(pipe, None, owner=f"method '{method.name}'"):
        try:
            method.prepare(pipe, ctx)
            with installed_processors(pipe, method.attention_processors(pipe), owner=f"method '{method.name}'"):
                yield AppliedMethod(method, ctx, time.perf_counter() - start)
        finally:
            method.remove(pipe, ctx)
            ctx.restore()


METHODS: Registry = Registry(kind="method", group="memorybench.methods", validator=check_method_class,
                             builtins=BUILTIN_METHODS)
register_method = METHODS.decorator
