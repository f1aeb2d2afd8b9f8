"""``clip-score``: CLIP cosine of every generation with its prompt, with the CLIP model the
suite names (``clip_arch`` option) loaded from the user's local weights (``--data
clip_weights=PATH``).

One column per prompt set, ``clip_<set>`` (``clip_mem``, ``clip_gen``): the mean over
prompts of the mean cosine over that prompt's generations; plus ``clip_<set>_<label>``
per label when the suite's prompts carry one (Webster-500's VM/TM).
"""

from __future__ import annotations

import numpy as np

from memorybench.api.metric import Metric, RunView
from memorybench.metrics.base import MetricValue
from memorybench.metrics.stats import mean_with_ci
from memorybench.api.metric import register_metric

SHORT_NAMES = {"memorized": "mem", "general": "gen"}


@register_metric()
class ClipScore(Metric):
    name = "clip-score"
    description = "CLIP cosine of each generation with its prompt (open_clip weights by local path), per prompt set and label"

    def compute(self, run: RunView) -> dict[str, MetricValue]:
        from memorybench.realdata.metric_models import clip_from

        scorer = clip_from(run)
        labels = run.data.labels
        out: dict[str, MetricValue] = {}
        for set_name, by_prompt in run.images.items():
            prompts = list(by_prompt)
            sizes = [len(by_prompt[p]) for p in prompts]
            captions = [p for p, n in zip(prompts, sizes) for _ in range(n)]
            scores = scorer.score(np.concatenate([by_prompt[p] for p in prompts]), captions)
            per_prompt = np.array([s.mean() for s in np.split(scores, np.cumsum(sizes)[:-1])])
            groups = {"": np.arange(len(prompts))}
            for label in sorted({labels[p] for p in prompts if p in labels}):
                groups[f"_{label.lower()}"] = np.array([i for i, p in enumerate(prompts) if labels.get(p) == label])
            short = SHORT_NAMES.get(set_name, set_name)
            for suffix, idx in groups.items():
                value, lo, hi = mean_with_ci(per_prompt[idx])
                out[f"clip_{short}{suffix}"] = MetricValue(
                    value=value, n=int(idx.size), ci_low=lo, ci_high=hi, higher_is_better=True,
                    implementation=scorer.implementation,
                    protocol={**scorer.protocol_dict(), "split": suffix[1:].upper() or "all",
                              "aggregation": "mean over prompts of the mean CLIP cosine over the prompt's generations",
                              "bootstrap": {"unit": "prompt", "resamples": 2000, "seed": 0}})
        return out
