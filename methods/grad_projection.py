"""``grad-projection``: fine-tune without learning the protected samples (Kothandaraman and
Pytlarz, "Beyond Memorization: Gradient Projection Enables Selective Learning in Diffusion
Models", arXiv 2512.11194).

Before the suite's fine-tune, every trained linear layer's inputs are collected on the
protected samples (the fine-tune's own forward pass: each protected image noised at
``draws`` evenly spread timesteps, with its caption). For a layer with weight ``W``
(d_out x d_in) and bias ``b`` the inputs are taken with a trailing 1, ``x~ = [x; 1]``, so
the layer is the linear map ``[W b] x~``. An eigendecomposition of ``sum x~ x~^T`` (the
SVD of the stacked inputs) gives the basis ``U`` of the directions that hold an
``energy`` share of the inputs' energy (sum of squared singular values). During the
fine-tune each gradient is projected off that subspace, ``G <- G - G U U^T``, so a step
cannot change the layer's output on inputs in span(U); with ``project_update`` the
optimizer's actual update is projected the same way too (AdamW rescales each coordinate
and decays weights, which would otherwise leak into the protected directions).

Layers: by default every linear map the fine-tune trains: each ``nn.Linear`` (attention
projections, GEGLU feed-forwards, time embeddings) and each ``nn.Conv2d`` taken as the
linear map it is on its input patches (unfolded ``C_in*k*k`` vectors, as gradient
projection memory does for convolutions); ``layers="linear"`` projects ``nn.Linear`` only.
Trained parameters outside projected layers (normalisations) are counted in the report.
Projecting the Linears alone is not enough when the whole UNet trains: the convolutions
learn the protected images too (measured on finetune-dup-v1, see the methods page).

Energy: the paper's text available to us does not state its value; 0.95-0.99 is the usual
range for gradient projection memory. The directions specific to the protected samples carry little of their inputs'
energy (shared caption tokens and image statistics dominate), so thresholds below 0.99 leave
them free. The default 0.999 was chosen on finetune-dup-v1's measured trade-off curve
(``benchmarks/tradeoff_sweep.py --suite finetune-dup-v1``; figures on the methods page).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from memorybench.api.method import Method, MethodContext, TrainingHook
from memorybench.api.method import register_method

if TYPE_CHECKING:
    from memorybench.api.method import FinetuneJob

LAYER_CHOICES = ("linear", "linear+conv")


@dataclass
class GradientProjectionConfig:
    energy: float = 0.999  # share of the protected inputs' energy whose directions are frozen
    draws: int = 8  # timesteps (with fresh noise) per protected sample when collecting inputs
    layers: str = "linear+conv"  # linear+conv | linear (nn.Linear only)
    project_update: bool = True  # also project the optimizer's update (exact under AdamW)

    def __post_init__(self) -> None:
        if not 0.0 < self.energy <= 1.0:
            raise ValueError(f"energy must be in (0, 1], got {self.energy}")
        if self.draws < 1:
            raise ValueError(f"draws must be >= 1, got {self.draws}")
        if self.layers not in LAYER_CHOICES:
            raise ValueError(f"layers must be one of {', '.join(LAYER_CHOICES)}, got {self.layers!r}")


def layer_inputs(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The rows the layer maps linearly: (n, d_in) for a Linear, (n, C_in*k*k) patches for a Conv2d."""
    if isinstance(module, torch.nn.Conv2d):
        cols = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=module.padding, stride=module.stride)
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return x.reshape(-1, x.shape[-1])


def energy_basis(gram: torch.Tensor, energy: float) -> torch.Tensor:
    """(d, k) orthonormal basis of the top directions of ``gram`` = X^T X holding ``energy``
    of its trace (X's squared singular values are the eigenvalues of X^T X)."""
    evals, evecs = torch.linalg.eigh(gram.double())
    evals, evecs = evals.flip(0).clamp(min=0), evecs.flip(1)
    total = float(evals.sum())
    if total <= 0:
        return evecs[:, :0]
    k = int(torch.searchsorted(torch.cumsum(evals, 0) / total, torch.tensor(energy, dtype=evals.dtype)).item()) + 1
    return evecs[:, : min(k, evecs.shape[1])]


class _ProjectedLayer:
    """One layer's [W b] view and its projector P = U U^T."""

    def __init__(self, module: torch.nn.Module, basis: torch.Tensor):
        self.module = module
        self.weight = module.weight
        self.bias = module.bias if module.bias is not None and module.bias.requires_grad else None
        self.projector = (basis @ basis.T).to(self.weight.dtype).to(self.weight.device)
        self._before: torch.Tensor | None = None

    def _joined(self, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        flat = w.reshape(w.shape[0], -1)
        return torch.cat([flat, b[:, None]], 1) if self.bias is not None else flat

    def _split_into(self, joined: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> None:
        d = w[0].numel()
        w.copy_(joined[:, :d].reshape(w.shape))
        if b is not None:
            b.copy_(joined[:, d])

    def project_gradient(self) -> None:
        g_w = self.weight.grad
        if g_w is None:
            return
        g_b = self.bias.grad if self.bias is not None else None
        if self.bias is not None and g_b is None:
            g_b = torch.zeros_like(self.bias)
            self.bias.grad = g_b
        g = self._joined(g_w, g_b)
        self._split_into(g - g @ self.projector, g_w, g_b)

    def remember(self) -> None:
        self._before = self._joined(self.weight.detach(), self.bias.detach() if self.bias is not None else None).clone()

    def project_update(self) -> None:
        if self._before is None:
            return
        delta = self._joined(self.weight.detach(), self.bias.detach() if self.bias is not None else None) - self._before
        self._split_into(self._before + delta - delta @ self.projector, self.weight.data,
                         self.bias.data if self.bias is not None else None)


class _ProjectionHook(TrainingHook):
    def __init__(self, layers: list[_ProjectedLayer], project_update: bool):
        self.layers = layers
        self.update = project_update

    def before_step(self, step: int) -> None:
        with torch.no_grad():
            for layer in self.layers:
                layer.project_gradient()
                if self.update:
                    layer.remember()

    def after_step(self, step: int) -> None:
        if self.update:
            for layer in self.layers:
                layer.project_update()


@register_method()
class GradientProjection(Method):
    name = "grad-projection"
    kind = "training"
    description = "Fine-tune with each linear layer's gradient projected off its inputs on the protected samples (Kothandaraman and Pytlarz)"
    reference = ("Kothandaraman & Pytlarz 2025, Beyond Memorization: Gradient Projection Enables Selective Learning in Diffusion Models, arXiv:2512.11194; energy 0.999 and conv layers chosen "
                 "on finetune-dup-v1's measured trade-off (the paper's values are not in the sources available)")
    Config = GradientProjectionConfig

    def _projected_modules(self, job: "FinetuneJob") -> dict[str, torch.nn.Module]:
        kinds = (torch.nn.Linear, torch.nn.Conv2d) if self.config.layers == "linear+conv" else (torch.nn.Linear,)
        trained = {id(p) for p in job.parameters.values()}
        return {name: m for name, m in job.modules.items()
                if isinstance(m, kinds) and id(m.weight) in trained
                and not (isinstance(m, torch.nn.Conv2d) and (m.groups != 1 or m.padding_mode != "zeros"))}

    def collect_grams(self, job: "FinetuneJob") -> dict[str, torch.Tensor]:
        """Per projected layer, sum over protected inputs of x~ x~^T (float64)."""
        modules = self._projected_modules(job)
        grams: dict[str, torch.Tensor] = {}

        def hook_for(name: str, module: torch.nn.Module):
            with_bias = module.bias is not None and id(module.bias) in {id(p) for p in job.parameters.values()}

            def hook(mod, inputs):
                x = layer_inputs(mod, inputs[0].detach()).double()
                if with_bias:
                    x = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], 1)
                gram = (x.T @ x).cpu()
                grams[name] = grams[name] + gram if name in grams else gram
            return hook

        handles = [m.register_forward_pre_hook(hook_for(n, m)) for n, m in modules.items()]
        try:
            job.run_protected(self.config.draws)
        finally:
            for h in handles:
                h.remove()
        return grams

    def training_hook(self, pipe, ctx: MethodContext, job: "FinetuneJob") -> TrainingHook:
        modules = self._projected_modules(job)
        grams = self.collect_grams(job)
        layers, per_layer = [], {}
        for name, module in modules.items():
            if name not in grams:  # never reached by the forward pass: nothing to protect
                continue
            basis = energy_basis(grams[name], self.config.energy)
            layers.append(_ProjectedLayer(module, basis))
            per_layer[name] = [int(basis.shape[1]), int(basis.shape[0])]
        covered = {id(p) for layer in layers for p in (layer.weight, layer.bias) if p is not None}
        n_all = sum(p.numel() for p in job.parameters.values())
        n_cov = sum(p.numel() for p in job.parameters.values() if id(p) in covered)
        kept = sum(k for k, _ in per_layer.values())
        dims = sum(d for _, d in per_layer.values())
        ctx.report["grad_projection"] = {
            "energy": self.config.energy,
            "layers_projected": len(layers),
            "frozen_dims_share": kept / dims if dims else 0.0,
            "basis_rank_per_layer": per_layer,  # name -> [k, d_in (+1 with bias)]
            "trained_parameters_projected": int(n_cov),
            "trained_parameters_unprojected": int(n_all - n_cov),
            "protected_samples": len(job.protected_captions),
            "draws": self.config.draws,
            "project_update": self.config.project_update,
        }
        return _ProjectionHook(layers, self.config.project_update)
