"""``pixel-diversity``: mean pairwise tiled L2 among the seeds of one prompt.

Model-free and fast, so it works on any pipeline (the smoke suite uses it). Higher means
more diverse generations; a memorized prompt collapses towards 0.
"""

from __future__ import annotations

import numpy as np

from memorybench.api.metric import Metric, RunView
from memorybench.metrics.base import MetricValue
from memorybench.metrics.stats import mean_with_ci
from memorybench.metrics.tiled_l2 import tiled_l2_pairwise
from memorybench.api.metric import register_metric


@register_metric()
class PixelDiversity(Metric):
    name = "pixel-diversity"
    description = "Mean pairwise tiled L2 (4x4 tiles, RMS on [0,1]) among seeds of a prompt; higher = more diverse"

    def compute(self, run: RunView) -> dict[str, MetricValue]:
        out = {}
        for set_name, by_prompt in run.images.items():
            per_prompt = []
            for images in by_prompt.values():
                s = len(images)
                if s < 2:
                    continue
                d = np.asarray(tiled_l2_pairwise(images), dtype=np.float64)
                per_prompt.append(d[~np.eye(s, dtype=bool)].mean())
            if not per_prompt:
                continue
            mean, lo, hi = mean_with_ci(per_prompt)
            out[f"pixel_diversity_{set_name}"] = MetricValue(
                value=mean, n=len(per_prompt), ci_low=lo, ci_high=hi, higher_is_better=True,
                implementation="memorybench.metrics.tiled_l2 (grid 4, RMS per tile, max over tiles)",
                protocol={"grid": 4, "aggregation": "mean over prompts of mean off-diagonal pairwise distance"},
            )
        return out
