"""``extraction-attack``: the Carlini et al. 2023 clique attack on suite tinyworld-v1.

Attacks every memorized prompt and every held-out general prompt with all the generations
the suite made for it (N = the suite's seeds per prompt) and the ``tinyworld`` preset
(k = 3; link and verification thresholds calibrated on the world's *real* images, so they
do not depend on the method under test). A flagged memorized prompt is verified against
its own training image (tiled L2, and SSCD when the SSCD model is installed); a flagged
general prompt is checked against its nearest training image. The calibration, the
within-prompt distances of this run's generations (diagnostic) and the per-prompt outcome
go into ``run.calibration["extraction"]``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memorybench.api.metric import Metric, RunView
from memorybench.metrics.base import MetricValue
from memorybench.metrics.extraction import (
    AttackPreset,
    attack_prompt,
    calibrate_tinyworld_threshold,
    extraction_summary,
    get_preset,
    separation_check,
    within_prompt_distances,
)
from memorybench.api.metric import register_metric


def _sscd_embedder(progress: bool):
    """The default SSCD embedder, or None (with the reason) when it is not installed."""
    try:
        from memorybench.metrics.sscd import SSCDEmbedder

        return SSCDEmbedder("default", progress=progress), None
    except Exception as e:  # a missing optional model must not break the attack
        return None, f"{type(e).__name__}: {e}"


@register_metric()
class ExtractionAttack(Metric):
    name = "extraction-attack"
    description = "Carlini et al. 2023 clique attack (tiled L2 + networkx), verified against the training set"
    preset_name = "tinyworld"
    use_sscd = True

    def thresholds(self, preset: AttackPreset, world) -> tuple[float, float, dict[str, Any]]:
        if preset.threshold is not None and preset.verify_l2 is not None:
            return preset.threshold, preset.verify_l2, {"source": preset.source}
        cal = calibrate_tinyworld_threshold(world, preset.grid)
        thr = preset.threshold if preset.threshold is not None else cal["threshold"]
        ver = preset.verify_l2 if preset.verify_l2 is not None else cal["verify_l2"]
        return thr, ver, cal

    def compute(self, run: RunView) -> dict[str, MetricValue]:
        world = run.data.world
        source_index = run.data.training.index
        preset = get_preset(self.preset_name)
        threshold, verify_l2, cal = self.thresholds(preset, world)

        mem = run.images.get("memorized", {})
        gen = run.images.get("general", {})
        mem_results = [attack_prompt(imgs, preset, threshold, verify_l2,
                                     source_image=world.train_images[source_index[p]], prompt=p)
                       for p, imgs in mem.items()]
        gen_results = [attack_prompt(imgs, preset, threshold, verify_l2, train_images=world.train_images, prompt=p)
                       for p, imgs in gen.items()]

        sscd_note = "not used"
        flagged_mem = [r for r in mem_results if r.flagged]
        if self.use_sscd and flagged_mem:
            embedder, why = _sscd_embedder(run.progress)
            if embedder is None:
                sscd_note = f"unavailable ({why}); verification by tiled L2 only"
            else:
                reps = np.stack([mem[r.prompt][r.representative] for r in flagged_mem])
                srcs = world.train_images[[source_index[r.prompt] for r in flagged_mem]]
                emb = embedder.embed(np.concatenate([reps, srcs]))
                m = len(flagged_mem)
                for i, r in enumerate(flagged_mem):
                    r.source_sscd = float(np.dot(emb[i], emb[m + i]))
                    r.verified = bool(r.verified and r.source_sscd >= preset.verify_sscd)
                sscd_note = f"{embedder.implementation}, representative vs source cosine >= {preset.verify_sscd}"

        n_mem = sorted({len(v) for v in mem.values()})
        n_gen = sorted({len(v) for v in gen.values()})
        mem_within = np.concatenate([within_prompt_distances(v, preset.grid) for v in mem.values()]) if mem else np.zeros(0)
        gen_within = np.concatenate([within_prompt_distances(v, preset.grid) for v in gen.values()]) if gen else np.zeros(0)
        run.calibration["extraction"] = {
            "preset": preset.name,
            "threshold": threshold,
            "verify_l2": verify_l2,
            "calibration": cal,
            "this_run_within_prompt_distances": separation_check(mem_within, gen_within, threshold),
            "memorized": [r.to_json() for r in mem_results],
            "general": [r.to_json() for r in gen_results],
        }
        return extraction_summary(
            mem_results, gen_results, preset, threshold, verify_l2,
            extra_protocol={
                "calibration_rule": cal.get("rule", cal.get("source", "")),
                "suite_seeds_memorized": n_mem, "suite_seeds_general": n_gen,
                "verification_sscd": sscd_note,
                "general_flagged_copying_a_training_image": [r.prompt for r in gen_results if r.verified],
            },
        )
