"""``memorybench analyze wanda-masks``: do different memorized prompts share one subspace?

Chavhan et al. ("Memorized Images in Diffusion Models share a Subspace that can be Located
and Deleted") find their pruning masks from a subset of memorized prompts and reports that
masks found from *different* subsets overlap strongly (high pairwise IoU per timestep and
layer): memorization would live in a compact shared subspace of the FFN weights. This
analysis repeats that on a suite: it splits the suite's memorized prompts (calibration and
evaluation prompts together: this is an analysis, nothing is evaluated) into subsets,
finds the ``wanda-prune`` mask of each with the method's own code, and reports

- pairwise IoU of the union masks (over the first k steps), pooled over layers and per layer;
- mean pairwise IoU of the per-step masks per (layer, timestep), as in their figure;
- mask density per subset: total, per layer and per timestep;
- a control: as many subsets of *general* (non-memorized) prompts, of the same size and
  drawn the same way, with their masks found the same way. Overlap between memorized
  subsets points to a memorization subspace only if it clearly exceeds the overlap between
  general subsets (high-|W| weights on busy inputs win the Wanda ranking for any prompt)
  and between memorized and general subsets.

It writes ``wanda-masks.json`` and the heatmap ``wanda-masks-iou.png`` into the output folder.
"""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from memorybench.core import provenance
from memorybench.core.io import atomic_write_text
from memorybench.core.config import config_to_dict
from memorybench.errors import ConfigError
from memorybench.suites.spec import Suite
from memorybench.suites.data import load_suite_data

REPORT_NAME = "wanda-masks.json"
FIGURE_NAME = "wanda-masks-iou.png"


@dataclass
class MaskAnalysisOptions:
    subsets: int = 5
    subset_size: int | None = None  # None: as many as fit (disjoint) / the pool // subsets (random)
    mode: Literal["disjoint", "random"] = "disjoint"
    seed: int = 0  # draws the subsets (shuffle for disjoint, sampling for random)
    control: bool = True  # also find masks for as many general-prompt subsets (the control)
    wanda: dict[str, Any] = field(default_factory=dict)  # WandaPruneConfig settings
    model_path: str | None = None
    device: str = "cpu"
    dtype: str | None = None
    progress: bool = True
    command: list[str] | None = None
    data_paths: dict[str, str] = field(default_factory=dict)  # --data KEY=PATH (e.g. a Webster prompt file)
    cache_dir: str | None = None  # accepted like run's; masks are recomputed, nothing is cached


# -- pure functions ---------------------------------------------------------------------------
def choose_subsets(prompts: list[str], n_subsets: int, size: int, mode: str, seed: int = 0) -> list[list[str]]:
    """``disjoint``: a seeded shuffle cut into ``n_subsets`` blocks of ``size`` (no prompt in two
    subsets); ``random``: each subset drawn independently without replacement (subsets may share
    prompts, as when subsets of a large pool are sampled)."""
    if n_subsets < 2:
        raise ConfigError(f"--subsets must be >= 2 to compare masks, got {n_subsets}")
    if size < 1:
        raise ConfigError(f"--subset-size must be >= 1, got {size}")
    if size > len(prompts):
        raise ConfigError(f"--subset-size {size} exceeds the {len(prompts)} memorized prompts available")
    rng = np.random.default_rng(seed)
    if mode == "disjoint":
        if n_subsets * size > len(prompts):
            raise ConfigError(f"{n_subsets} disjoint subsets of {size} need {n_subsets * size} prompts; "
                              f"the suite has {len(prompts)} memorized prompts (use --mode random or smaller subsets)")
        order = rng.permutation(len(prompts))
        return [[prompts[j] for j in order[i * size:(i + 1) * size]] for i in range(n_subsets)]
    if mode == "random":
        return [[prompts[j] for j in rng.choice(len(prompts), size=size, replace=False)] for _ in range(n_subsets)]
    raise ConfigError(f"unknown subset mode '{mode}': choose disjoint or random")


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two boolean masks; two empty masks count as identical (1.0)."""
    if a.shape != b.shape:
        raise ValueError(f"mask shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}")
    union = int((a | b).sum())
    return 1.0 if union == 0 else int((a & b).sum()) / union


def pooled(mask: dict[str, torch.Tensor], layers: list[str]) -> torch.Tensor:
    return torch.cat([mask[name].reshape(-1) for name in layers])


def pairwise_iou_matrix(masks: list[dict[str, torch.Tensor]], layers: list[str]) -> np.ndarray:
    """(n, n) IoU of the masks pooled over ``layers`` (1 on the diagonal)."""
    flat = [pooled(m, layers) for m in masks]
    n = len(flat)
    out = np.eye(n)
    for i, j in itertools.combinations(range(n), 2):
        out[i, j] = out[j, i] = iou(flat[i], flat[j])
    return out


def mean_pairwise_iou(masks: list[torch.Tensor]) -> float:
    pairs = list(itertools.combinations(range(len(masks)), 2))
    return float(np.mean([iou(masks[i], masks[j]) for i, j in pairs]))


def union_over_steps(step_masks: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per layer (T, d_out, d_in) -> (d_out, d_in): the weights ``wanda-prune`` zeroes."""
    return {name: m.any(dim=0) for name, m in step_masks.items()}


def densities(step_masks: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Union density (total and per layer) and per-step density pooled over layers."""
    union = union_over_steps(step_masks)
    total = sum(m.numel() for m in union.values())
    steps = next(iter(step_masks.values())).shape[0]
    per_step = [sum(int(m[t].sum()) for m in step_masks.values()) / total for t in range(steps)]
    return {
        "total": sum(int(m.sum()) for m in union.values()) / total,
        "per_layer": {name: float(m.double().mean()) for name, m in union.items()},
        "per_timestep": per_step,
    }


def cross_iou(a: list[dict[str, torch.Tensor]], b: list[dict[str, torch.Tensor]], layers: list[str]) -> dict[str, Any]:
    """Mean IoU over every (mask of ``a``, mask of ``b``) pair of union masks, pooled and per layer."""
    pairs = list(itertools.product(range(len(a)), range(len(b))))
    return {
        "mean": float(np.mean([iou(pooled(a[i], layers), pooled(b[j], layers)) for i, j in pairs])),
        "per_layer": {name: float(np.mean([iou(a[i][name], b[j][name]) for i, j in pairs])) for name in layers},
    }


def compare_masks(step_masks: list[dict[str, torch.Tensor]],
                  control: list[dict[str, torch.Tensor]] | None = None) -> dict[str, Any]:
    """Every IoU figure of the analysis for per-subset masks {layer: (T, d_out, d_in) bool};
    ``control``: masks of general-prompt subsets, compared among themselves and with ``step_masks``."""
    layers = list(step_masks[0])
    steps = step_masks[0][layers[0]].shape[0]
    unions = [union_over_steps(m) for m in step_masks]
    matrix = pairwise_iou_matrix(unions, layers)
    off = ~np.eye(len(unions), dtype=bool)
    per_layer_step = [[mean_pairwise_iou([m[name][t] for m in step_masks]) for t in range(steps)] for name in layers]
    per_step_pooled = [mean_pairwise_iou([torch.cat([m[name][t].reshape(-1) for name in layers]) for m in step_masks])
                       for t in range(steps)]
    out: dict[str, Any] = {
        "layers": layers,
        "union_iou_matrix": matrix.tolist(),
        "union_iou_mean": float(matrix[off].mean()),
        "union_iou_min": float(matrix[off].min()),
        "union_iou_per_layer": {name: mean_pairwise_iou([u[name] for u in unions]) for name in layers},
        "step_iou_per_timestep": per_step_pooled,
        "step_iou_per_layer_timestep": per_layer_step,
    }
    if control:
        c_unions = [union_over_steps(m) for m in control]
        full = pairwise_iou_matrix(unions + c_unions, layers)  # memorized first, then general
        n = len(unions)
        c_off = ~np.eye(len(c_unions), dtype=bool)
        out["control"] = {
            "iou_matrix_all": full.tolist(),
            "general_iou_mean": float(full[n:, n:][c_off].mean()) if len(c_unions) > 1 else None,
            "general_iou_per_layer": ({name: mean_pairwise_iou([u[name] for u in c_unions]) for name in layers}
                                      if len(c_unions) > 1 else None),
            "memorized_vs_general": cross_iou(unions, c_unions, layers),
        }
    return out


# -- the analysis ---------------------------------------------------------------------------
def analyze_wanda_masks(suite: Suite, options: MaskAnalysisOptions, out_dir: str | Path,
                        pipe=None) -> dict[str, Any]:
    from memorybench.methods.wanda_prune import WandaPrune, find_memorized_weights

    from memorybench.run.request import RunOptions
    from memorybench.run.runner import load_model

    wall0 = time.perf_counter()
    wanda = WandaPrune.from_settings(options.wanda).config
    data = load_suite_data(suite, options.data_paths, prompts_only=True)
    pool = list(data.calibration_prompts) + list(data.prompts.get("memorized", []))
    if not pool:
        raise ConfigError(f"suite '{suite.name}' has no memorized prompts to find masks from")
    size = options.subset_size or (len(pool) // options.subsets)
    subsets = choose_subsets(pool, options.subsets, size, options.mode, options.seed)
    control_subsets: list[list[str]] = []
    if options.control:
        general = list(data.prompts.get("general", []))
        try:
            control_subsets = choose_subsets(general, options.subsets, size, options.mode, options.seed)
        except ConfigError as exc:
            raise ConfigError(f"control (general prompts): {exc} (or pass --no-control)") from exc
    if pipe is None:
        pipe = load_model(suite, RunOptions(model_path=options.model_path, device=options.device, dtype=options.dtype))

    jobs = subsets + control_subsets
    masks, seconds = [], []
    for prompts in tqdm(jobs, desc="wanda masks", unit="subset", disable=not options.progress, file=sys.stderr):
        t0 = time.perf_counter()
        found = find_memorized_weights(pipe, prompts, suite.sampler, wanda, seed=0)
        masks.append({name: m.cpu() for name, m in found.items()})
        seconds.append(time.perf_counter() - t0)
    control_masks = masks[len(subsets):]
    masks = masks[: len(subsets)]

    comparison = compare_masks(masks, control_masks)
    dens = [densities(m) for m in masks]
    report = {
        "format": "memorybench-wanda-masks-v1",
        "suite": {"name": suite.name, "version": suite.version, "sha256": suite.sha256(), "data": data.hashes},
        "model": {"id": pipe.model_id, "weights_sha256": pipe.weights_sha256, "sampler": suite.sampler.sampler,
                  "steps": suite.sampler.steps, "guidance": suite.sampler.guidance},
        "wanda_config": config_to_dict(wanda),
        "subsets": {
            "mode": options.mode, "count": options.subsets, "size": size, "seed": options.seed,
            "pool": "the suite's memorized prompts, calibration and evaluation together",
            "pool_size": len(pool), "prompts": subsets,
        },
        "control": ({"pool": "the suite's general (held-out, non-memorized) prompts", "prompts": control_subsets,
                     "density_per_subset_total": [densities(m)["total"] for m in control_masks]}
                    if control_masks else None),
        "density": {
            "per_subset_total": [d["total"] for d in dens],
            "max_total": max(d["total"] for d in dens),
            "per_layer_mean": {name: float(np.mean([d["per_layer"][name] for d in dens])) for name in comparison["layers"]},
            "per_timestep_mean": np.mean([d["per_timestep"] for d in dens], axis=0).tolist(),
            "per_subset": dens,
            "bar": "union density < 2% of FFN weights",
            "bar_met": bool(max(d["total"] for d in dens) < 0.02),
        },
        "iou": comparison,
        "cost": {"seconds_per_subset": seconds},
        "provenance": {
            **provenance.collect(options.command),
            "wall_seconds": time.perf_counter() - wall0,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot_iou(report, out / FIGURE_NAME)
    report["files"] = {"report": REPORT_NAME, "figure": FIGURE_NAME}
    atomic_write_text(out / REPORT_NAME, json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


def short_layer(name: str) -> str:
    """``down_blocks.1.attentions.0.transformer_blocks.0`` -> ``down1.0``."""
    parts = name.split(".")
    if parts[0] == "mid_block":
        return "mid"
    return f"{parts[0].replace('_blocks', '')}{parts[1]}.{parts[3]}"


def plot_iou(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iou_ = report["iou"]
    matrix = np.array(iou_["union_iou_matrix"])
    labels = [f"M{i + 1}" for i in range(matrix.shape[0])]
    if "control" in iou_:
        matrix = np.array(iou_["control"]["iou_matrix_all"])
        labels += [f"G{i + 1}" for i in range(matrix.shape[0] - len(labels))]
    grid = np.array(iou_["step_iou_per_layer_timestep"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1, 1.4]})
    ax = axes[0]
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    for i, j in itertools.product(range(len(labels)), repeat=2):
        ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                color="black" if matrix[i, j] > 0.6 else "white")
    sub = report["subsets"]
    ax.set_title(f"IoU of union masks: M memorized, G general subsets ({sub['mode']}, {sub['size']} prompts)",
                 fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax = axes[1]
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_yticks(range(len(iou_["layers"])), [short_layer(n) for n in iou_["layers"]])
    ax.set_xlabel("denoising step")
    ax.set_title("mean pairwise IoU per layer and step (memorized subsets)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def format_table(report: dict[str, Any]) -> list[str]:
    iou_, dens, sub = report["iou"], report["density"], report["subsets"]
    ctrl = iou_.get("control")
    n = len(iou_["union_iou_matrix"])
    lines = [f"wanda-prune masks: {n} {sub['mode']} subsets of {sub['size']} memorized prompts "
             f"(pool {sub['pool_size']}), s={report['wanda_config']['sparsity']}, "
             f"k={report['wanda_config']['timesteps']} steps"
             + (f"; control: {n} subsets of general prompts" if ctrl else "")]
    lines += ["pairwise IoU of union masks (all FFN layers pooled), memorized subsets:",
              "      " + " ".join(f"{'M' + str(j + 1):>6}" for j in range(n))]
    for i, row in enumerate(iou_["union_iou_matrix"]):
        lines.append(f"{'M' + str(i + 1):>5} " + " ".join(f"{v:6.3f}" for v in row))
    lines.append(f"mean pairwise IoU memorized-memorized {iou_['union_iou_mean']:.3f} (min {iou_['union_iou_min']:.3f})")
    if ctrl:
        gen = ctrl["general_iou_mean"]
        lines.append(f"control: general-general {'n/a' if gen is None else f'{gen:.3f}'}, "
                     f"memorized-general {ctrl['memorized_vs_general']['mean']:.3f}")
    lines.append(f"{'layer':<48} {'mem':>6} {'gen':>6} {'mem-gen':>7} {'density':>8}")
    for name in iou_["layers"]:
        g = (ctrl or {}).get("general_iou_per_layer") or {}
        x = ctrl["memorized_vs_general"]["per_layer"][name] if ctrl else None
        lines.append(f"{name:<48} {iou_['union_iou_per_layer'][name]:6.3f} "
                     f"{'' if name not in g else f'{g[name]:6.3f}':>6} {'' if x is None else f'{x:7.3f}':>7} "
                     f"{dens['per_layer_mean'][name]:8.4f}")
    lines.append("per step, memorized: IoU " + " ".join(f"{v:.2f}" for v in iou_["step_iou_per_timestep"]))
    lines.append("per step, memorized: density " + " ".join(f"{v:.4f}" for v in dens["per_timestep_mean"]))
    lines.append("union mask density per memorized subset: " + ", ".join(f"{v:.4f}" for v in dens["per_subset_total"])
                 + f" (bar < 0.02: {'met' if dens['bar_met'] else 'NOT met'})")
    return lines
