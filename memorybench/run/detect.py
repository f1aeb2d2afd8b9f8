"""``memorybench detect``: how well a detector separates memorized from other prompts.

Positives are the suite's memorized evaluation prompts, negatives its held-out general
prompts (prompt sets ``memorized`` and ``general``). The detector scores every prompt on
the suite's model and sampler; the report gives AUROC with a bootstrap CI over prompts,
TPR at 1% FPR, the UNet evaluations per prompt (declared by the detector and counted by a
hook on the UNet) and wall time, written as JSON with provenance.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from memorybench.core import provenance
from memorybench.core.io import atomic_write_text
from memorybench.api.detector import DetectionScores, Detector
from memorybench.errors import ConfigError
from memorybench.metrics.stats import auroc, auroc_with_ci, tpr_at_fpr
from memorybench.model.pipeline import PipelineAdapter
from memorybench.api.detector import DETECTORS
from memorybench.suites.spec import Suite
from memorybench.suites.data import load_suite_data

DETECTION_FORMAT = "memorybench-detection-v1"
POSITIVE_SET, NEGATIVE_SET = "memorized", "general"


@dataclass
class DetectOptions:
    model_path: str | None = None
    output: str | None = None
    device: str = "cpu"
    dtype: str | None = None
    batch_size: int = 8  # prompts per detector call (the UNet sees prompts x seeds x 2)
    limit: int | None = None  # first N prompts of each set (quick checks)
    progress: bool = True
    command: list[str] | None = None
    data_paths: dict[str, str] = field(default_factory=dict)  # --data KEY=PATH (e.g. general_prompts=FILE)
    cache_dir: str | None = None  # accepted like run's; detection scores are not cached


class UNetCallCounter:
    """Counts UNet evaluations: batch rows of every forward call while installed."""

    def __init__(self, unet: torch.nn.Module):
        self.unet, self.calls, self._handle = unet, 0, None

    def __enter__(self) -> "UNetCallCounter":
        def hook(module, args, kwargs):
            sample = args[0] if args else kwargs["sample"]
            self.calls += int(sample.shape[0])

        self._handle = self.unet.register_forward_pre_hook(hook, with_kwargs=True)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()


def detection_prompts(suite: Suite, limit: int | None = None, data_paths: dict[str, str] | None = None
                      ) -> tuple[list[str], list[str], dict[str, str]]:
    pos, neg, hashes, _ = _detection_data(suite, limit, data_paths)
    return pos, neg, hashes


def _detection_data(suite: Suite, limit: int | None, data_paths: dict[str, str] | None
                    ) -> tuple[list[str], list[str], dict[str, str], dict[str, str]]:
    """Positives, negatives, data hashes and the positives' labels (VM/TM on Webster)."""
    data = load_suite_data(suite, data_paths, prompts_only=True)
    missing = [s for s in (POSITIVE_SET, NEGATIVE_SET) if not data.prompts.get(s)]
    if missing:
        hint = (" (pass non-memorized prompts with --data general_prompts=FILE)"
                if NEGATIVE_SET in missing and suite.data == "webster500" else "")
        raise ConfigError(f"suite '{suite.name}' has no prompts in set(s) {missing}: detect needs "
                          f"'{POSITIVE_SET}' (positives) and '{NEGATIVE_SET}' (negatives){hint}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {limit}")
    pos = data.prompts[POSITIVE_SET][:limit]
    neg = data.prompts[NEGATIVE_SET][:limit]
    return pos, neg, data.hashes, {p: data.labels[p] for p in pos if p in data.labels}


def score_prompts(detector: Detector, pipe: PipelineAdapter, prompts: list[str], suite: Suite,
                  batch_size: int, progress: bool = False, desc: str = "detect") -> DetectionScores:
    parts = []
    bar = tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not progress, file=sys.stderr)
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        parts.append(detector.score(pipe, batch, suite.sampler))
        bar.update(len(batch))
    bar.close()
    return DetectionScores.concat(parts)


def detection_metrics(pos_scores: np.ndarray, neg_scores: np.ndarray) -> dict[str, Any]:
    value, lo, hi = auroc_with_ci(pos_scores, neg_scores)
    return {
        "auroc": value,
        "auroc_ci95": [lo, hi],
        "tpr_at_1pct_fpr": tpr_at_fpr(pos_scores, neg_scores, 0.01),
        "n_positive": int(pos_scores.size),
        "n_negative": int(neg_scores.size),
        "note": "positives: memorized evaluation prompts; negatives: held-out general prompts; "
                "AUROC CI: 2000-resample percentile bootstrap over prompts on each side",
    }


def run_detection(suite: Suite, detector_name: str, settings: dict[str, Any] | None = None,
                  options: DetectOptions | None = None, pipe: PipelineAdapter | None = None) -> dict[str, Any]:
    """Score the suite's positives and negatives with one detector; return the report."""
    from memorybench.run.request import RunOptions
    from memorybench.run.runner import load_model

    options = options or DetectOptions()
    wall0 = time.perf_counter()
    provenance.memorybench_commit()  # the source state now, before anything can change it
    detector = DETECTORS.get(detector_name).from_settings(settings or {})
    if isinstance(options.batch_size, bool) or not isinstance(options.batch_size, int) or options.batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {options.batch_size!r}")
    pos, neg, data_hashes, labels = _detection_data(suite, options.limit, options.data_paths)
    if pipe is None:
        pipe = load_model(suite, RunOptions(model_path=options.model_path, device=options.device, dtype=options.dtype))
    prompts = pos + neg
    declared = detector.unet_calls_per_prompt(suite.sampler)
    t0 = time.perf_counter()
    with UNetCallCounter(pipe.unet) as counter:
        scores = score_prompts(detector, pipe, prompts, suite, options.batch_size, options.progress,
                               desc=f"detect [{detector.name}]")
    score_seconds = time.perf_counter() - t0
    s_pos, s_neg = scores.scores[: len(pos)], scores.scores[len(pos):]
    s = suite.sampler
    report = {
        "format": DETECTION_FORMAT,
        "suite": {"name": suite.name, "version": suite.version, "sha256": suite.sha256(), "data": data_hashes,
                  "positive_set": POSITIVE_SET, "negative_set": NEGATIVE_SET, "limit": options.limit,
                  **({"smoke": suite.options["smoke"]} if suite.options.get("smoke") else {})},
        "detector": {"name": detector.name, "config": detector.config_dict(),
                     "config_sha256": detector.config_sha256(), "source": DETECTORS.source(detector.name),
                     "reference": detector.reference, "higher_is_memorized": True},
        "model": {"id": pipe.model_id, "weights_sha256": pipe.weights_sha256, "sampler": s.sampler,
                  "steps": s.steps, "guidance": s.guidance, "dtype": pipe.dtype_name,
                  "resolution": [s.height, s.width]},
        "metrics": detection_metrics(s_pos, s_neg),
        # positives split by label (Webster's VM / TM), each against all negatives
        "by_label": _by_label(pos, labels, s_pos, s_neg),
        # the same separation for each reported component (not the detector's output)
        "component_auroc": {k: auroc(v[: len(pos)], v[len(pos):]) for k, v in scores.components.items()},
        "cost": {
            "unet_calls_per_prompt": declared,
            "unet_calls_per_prompt_measured": counter.calls / len(prompts),
            "seconds_per_prompt": score_seconds / len(prompts),
            "scoring_seconds": score_seconds,
        },
        "prompts": [
            {"prompt": p, "label": int(i < len(pos)), "score": float(scores.scores[i]),
             **{k: float(v[i]) for k, v in scores.components.items()}}
            for i, p in enumerate(prompts)
        ],
        "provenance": {
            **provenance.collect(options.command),
            "wall_seconds": time.perf_counter() - wall0,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    if options.output:
        atomic_write_text(Path(options.output), json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report


def _by_label(pos: list[str], labels: dict[str, str], s_pos: np.ndarray, s_neg: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label in sorted(set(labels.values())):
        mask = np.array([labels.get(p) == label for p in pos])
        if mask.sum() >= 2:  # a bootstrap CI needs at least two positives
            out[label] = detection_metrics(s_pos[mask], s_neg)
    return out


def default_detection_path(suite: Suite, detector: Detector) -> Path:
    return Path("results") / suite.name / f"detect-{detector.name}-{detector.config_sha256()[:8]}.json"


def format_report(report: dict[str, Any]) -> list[str]:
    m, c = report["metrics"], report["cost"]
    lo, hi = m["auroc_ci95"]
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
    lines = [
        f"suite {report['suite']['name']} v{report['suite']['version']}  detector {report['detector']['name']}"
        f"  model {report['model']['id']}",
        f"AUROC {m['auroc']:.4f}{ci}  TPR@1%FPR {m['tpr_at_1pct_fpr']:.4f}  "
        f"({m['n_positive']} memorized vs {m['n_negative']} general prompts)",
        f"cost: {c['unet_calls_per_prompt']} UNet calls/prompt (measured {c['unet_calls_per_prompt_measured']:g}), "
        f"{c['seconds_per_prompt']:.3f} s/prompt; wall {report['provenance']['wall_seconds']:.1f} s",
    ]
    for label, lm in report.get("by_label", {}).items():
        lines.append(f"  {label}: AUROC {lm['auroc']:.4f}  TPR@1%FPR {lm['tpr_at_1pct_fpr']:.4f}  ({lm['n_positive']} prompts)")
    if report.get("component_auroc"):
        lines.append("component AUROC: " + ", ".join(f"{k} {v:.4f}" for k, v in report["component_auroc"].items()))
    return lines
