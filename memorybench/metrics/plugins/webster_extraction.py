"""``webster-extraction``: the Carlini et al. 2023 clique attack on the memorized prompts
of an SD-scale suite, verified against each prompt's ground-truth training images.

Preset (``attack_preset`` option): ``chavhan2024`` (k = 3, link threshold 50/255) or
``carlini2023`` (k = 10, 0.10), both with fixed thresholds; the attack uses the suite's
generations per prompt (up to the preset's N, recorded). A flagged clique is verified
when its representative is within the preset's tiled L2 of one of the prompt's
ground-truth images (resized and centre-cropped to the generation size) and its SSCD
cosine to that image, under the suite's SSCD protocol, is at least ``verify_sscd``.
Columns ``extraction_flagged`` / ``extraction_verified``, and ``_vm`` / ``_tm`` per label.
"""

from __future__ import annotations

import numpy as np

from memorybench.api.metric import Metric, RunView
from memorybench.metrics.base import MetricValue
from memorybench.metrics.extraction import attack_prompt, extraction_summary, get_preset
from memorybench.api.metric import register_metric


@register_metric()
class WebsterExtraction(Metric):
    name = "webster-extraction"
    description = "Carlini et al. 2023 clique attack (chavhan2024/carlini2023 presets), verified against the LAION ground truth"

    def compute(self, run: RunView) -> dict[str, MetricValue]:
        from memorybench.realdata.gt_images import resize_center_crop
        from memorybench.realdata.metric_models import sscd_from

        preset = get_preset(run.suite.options["attack_preset"])
        gt, records = run.data.ground_truth, run.data.records
        mem = run.images["memorized"]
        results, targets = [], {}
        for prompt, images in mem.items():
            h, w = images.shape[1:3]
            gts = [resize_center_crop(im, h, w) for im in gt.images(records[prompt].laion_index)]
            targets[prompt] = gts
            results.append(attack_prompt(images, preset, preset.threshold, preset.verify_l2,
                                         train_images=np.stack(gts), prompt=prompt))
        flagged = [r for r in results if r.flagged]
        if flagged:  # SSCD check of each flagged clique's representative against its nearest ground truth
            embedder = sscd_from(run, progress=False)
            reps = np.stack([mem[r.prompt][r.representative] for r in flagged])
            tgts = np.stack([targets[r.prompt][r.nearest_train] for r in flagged])
            emb = embedder.embed(np.concatenate([reps, tgts]))
            for i, r in enumerate(flagged):
                r.source_sscd = float(np.dot(emb[i], emb[len(flagged) + i]))
                r.verified = bool(r.verified and r.source_sscd >= preset.verify_sscd)
            sscd_note = f"{embedder.implementation}, representative vs nearest ground truth >= {preset.verify_sscd}"
        else:
            sscd_note = "no clique flagged"
        extra = {"verification": "nearest ground-truth image of the prompt (resized, centre-cropped to the "
                                 "generation size): tiled L2 <= verify_l2 and SSCD >= verify_sscd",
                 "verification_sscd": sscd_note}
        out = extraction_summary(results, [], preset, preset.threshold, preset.verify_l2, extra_protocol=extra)
        labels = {records[r.prompt].label for r in results} - {None}
        for label in sorted(labels):
            subset = [r for r in results if records[r.prompt].label == label]
            part = extraction_summary(subset, [], preset, preset.threshold, preset.verify_l2,
                                      extra_protocol={**extra, "split": label})
            out.update({f"{k}_{label.lower()}": v for k, v in part.items()})
        run.calibration["webster_extraction"] = {"preset": preset.to_json(),
                                                 "prompts": [r.to_json() for r in results]}
        return out
