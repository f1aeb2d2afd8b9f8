"""``webster-copy``: SSCD of each memorized-prompt generation to the prompt's ground-truth
training images, under the suite's SSCD protocol preset, aggregated the four ways the
papers do (:mod:`memorybench.metrics.copy_aggregation`), overall and per VM/TM label.

The preset (``sscd_protocol`` option: ``default``, ``wen2024``, ``nemo2024``,
``membench2024``) fixes checkpoint and preprocessing; every column's protocol names it
and says which column is that paper's headline aggregation. Per-prompt maxima go into
``run.calibration["webster_copy"]`` so every number can be traced to its prompts.
"""

from __future__ import annotations

import numpy as np

from memorybench.api.metric import Metric, RunView
from memorybench.metrics.plugins.clip_score import SHORT_NAMES
from memorybench.metrics.base import MetricValue
from memorybench.metrics.copy_aggregation import copy_aggregations
from memorybench.api.metric import register_metric

# Which column reproduces each paper's reported number.
PAPER_AGGREGATION = {
    "default": "sscd_mem (mean over prompts of the per-prompt max over generations x ground truths)",
    "wen2024": "sscd_pergen_mem (per generation max over ground truths, then the mean; Wen et al. ICLR'24)",
    "nemo2024": "sscd_median_mem_vm / sscd_median_mem_tm (median +- MAD of the per-prompt max, VM/TM split; NeMo)",
    "membench2024": "sscd_mem and copy_rate_mem (max SSCD and fraction > 0.5; MemBench)",
}


@register_metric()
class WebsterCopy(Metric):
    name = "webster-copy"
    description = "SSCD to LAION ground truth under a paper's protocol preset: max, per-generation max, rate > 0.5, median +- MAD; VM/TM"

    def compute(self, run: RunView) -> dict[str, MetricValue]:
        from memorybench.metrics.plugins.tinyworld_copy import cached_embeddings
        from memorybench.realdata.metric_models import sscd_from

        gt, records = run.data.ground_truth, run.data.records
        opts = run.suite.options
        embedder = sscd_from(run, progress=run.progress)
        out: dict[str, MetricValue] = {}
        trace = {}
        for set_name, by_prompt in run.images.items():
            if not all(p in records for p in by_prompt):
                continue  # prompts without a training image (the general set) have nothing to copy
            prompts = list(by_prompt)
            sizes = [len(by_prompt[p]) for p in prompts]
            gen_emb = np.split(embedder.embed(np.concatenate([by_prompt[p] for p in prompts])), np.cumsum(sizes)[:-1])
            sims = []
            for prompt, emb in zip(prompts, gen_emb):
                index = records[prompt].laion_index
                gt_emb = cached_embeddings(embedder, gt.images(index), gt.sha256([index]), run.cache_dir)
                sims.append(emb @ gt_emb.T)
            labels = [records[p].label for p in prompts]
            short = SHORT_NAMES.get(set_name, set_name)
            protocol = {"sscd_protocol": embedder.protocol.name, "sscd": embedder.protocol_dict(),
                        "paper_aggregation": PAPER_AGGREGATION.get(embedder.protocol.name, ""),
                        "ground_truth": "every image of the prompt's LAION index in the gt_images folder"}
            out.update(copy_aggregations(sims, labels, short, float(opts.get("copy_threshold", 0.5)),
                                         embedder.implementation, protocol))
            per_prompt = [s.max() for s in sims]
            trace[set_name] = [{"prompt": p, "laion_index": records[p].laion_index, "label": records[p].label,
                                "max_sscd": float(m), "per_generation_max": [float(x) for x in s.max(axis=1)],
                                "n_ground_truth": int(s.shape[1])}
                               for p, m, s in zip(prompts, per_prompt, sims)]
        run.calibration["webster_copy"] = {"sscd_protocol": embedder.protocol.name,
                                           "implementation": embedder.implementation,
                                           "prompt_file": run.data.prompt_file,
                                           "per_prompt": trace}
        return out
