"""``bright-ending-copy``: copy similarity inside the Bright Ending mask (Chen, Liu, Shah and
Xu, "Exploring Local Memorization in Diffusion Models via Bright Ending Attention", ICLR 2025).

Whole-image SSCD misses a generation that copies only part of a training image. This metric
compares each memorized-prompt generation with its training image inside that prompt's
Bright Ending mask (see :mod:`memorybench.metrics.bright_ending`).

Where the mask comes from. A metric sees finished images, not the attention of the run that
made them. The mask is therefore computed by this metric from the model it is handed (the
suite's model with no method applied: methods are removed before metrics run), 16 images per
memorized prompt as the authors localise, and cached by content (weights, prompt, seeds,
sampler, implementation) under the run's cache directory. So it is the same region for every
method on the same model, it adds nothing to the image cache or the runner, resumes and
shards exactly like the rest of the run, and the second method on a model pays nothing.

Columns (memorized prompts, one value per prompt, then the mean over prompts):
``be_sscd_mem`` the max over seeds of the local SSCD (as ``sscd_mem`` takes the max of the
whole-image SSCD; higher = more copying), ``be_l2_mem`` the mean over seeds of the
mask-weighted RMS pixel distance (lower = more copying), ``be_local_only_mem`` the fraction of generations whose local
SSCD reaches the copy threshold while their whole-image SSCD does not (the copies whole-image
SSCD misses), and ``be_mask_area_mem`` the mean mask value (1 = the whole image is bright,
i.e. global memorization).
"""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np

from memorybench.api.metric import Metric, RunView, register_metric
from memorybench.core.io import read_checked, write_checked
from memorybench.errors import ConfigError
from memorybench.metrics.base import MetricValue
from memorybench.metrics.bright_ending import IMPLEMENTATION, bright_ending_maps, local_copy_scores, prompt_masks
from memorybench.metrics.sscd import SSCDEmbedder
from memorybench.metrics.stats import mean_with_ci

MASK_SEEDS = 16  # images per prompt the mask is localised with (the authors' 16)
CROP_LEVEL = 0.5  # local SSCD crops to the box of mask >= 0.5 (mask max = 1)
DEFAULT_THRESHOLD = 0.5  # when no calibrated copy threshold is in the run (tinyworld-copy records one)


def cached_maps(run: RunView, prompts: list[str]) -> np.ndarray:
    """(P, MASK_SEEDS, h, w) Bright Ending maps of the run's model, cached per prompt."""
    pipe, s = run.pipe, run.suite.sampler
    seeds = list(range(MASK_SEEDS))
    out: dict[str, np.ndarray] = {}
    paths = {}
    for p in prompts:
        spec = {"weights": pipe.weights_sha256, "dtype": pipe.dtype_name, "prompt": p, "seeds": seeds,
                "sampler": [s.sampler, s.steps, float(s.guidance), s.height, s.width], "impl": IMPLEMENTATION}
        key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]
        paths[p] = run.cache_dir / "bright_ending" / f"{key}.npy" if run.cache_dir is not None else None
        data = read_checked(paths[p], "Bright Ending maps") if paths[p] is not None else None
        if data is not None:
            out[p] = np.load(io.BytesIO(data), allow_pickle=False)
    todo = [p for p in prompts if p not in out]
    if todo:
        maps = bright_ending_maps(pipe, [p for p in todo for _ in seeds], [x for _ in todo for x in seeds], s)
        maps = maps.reshape(len(todo), len(seeds), *maps.shape[1:])
        for p, m in zip(todo, maps):
            out[p] = m
            if paths[p] is not None:
                buf = io.BytesIO()
                np.save(buf, m, allow_pickle=False)
                write_checked(paths[p], buf.getvalue())
    return np.stack([out[p] for p in prompts])


@register_metric()
class BrightEndingCopy(Metric):
    name = "bright-ending-copy"
    description = "SSCD and L2 to the training image inside the Bright Ending mask (Chen et al. 2025)"

    def compute(self, run: RunView) -> dict[str, MetricValue]:
        if run.pipe is None:
            raise ConfigError("metric 'bright-ending-copy' needs the model (it reads its cross-attention)")
        mem_prompts, mem_images = run.stacked("memorized")  # (P, seeds, H, W, 3)
        n_p, n_s = mem_images.shape[:2]
        size = mem_images.shape[2:4]
        masks = prompt_masks(cached_maps(run, mem_prompts), size)  # (P, H, W)
        sources = run.data.training.images[[run.data.training.index[p] for p in mem_prompts]]
        embedder = SSCDEmbedder("default", progress=run.progress)
        scores = local_copy_scores(mem_images.reshape(-1, *mem_images.shape[2:]), np.repeat(sources, n_s, axis=0),
                                   np.repeat(masks, n_s, axis=0), embedder, CROP_LEVEL)
        per = {k: v.reshape(n_p, n_s) for k, v in scores.items()}
        calibrated = (run.calibration.get("copy") or {}).get("threshold")
        threshold = float(calibrated) if calibrated is not None else DEFAULT_THRESHOLD
        local_only = ((per["local_sscd"] >= threshold) & (per["whole_sscd"] < threshold)).mean(axis=1)
        protocol = {"mask": "end-token cross-attention at the last step, highest-resolution down-block attn2 layers, "
                            "mean over heads, layers and seeds, / max, bilinear to image size",
                    "mask_model": "the suite's model without the method", "mask_seeds": MASK_SEEDS,
                    "crop_level": CROP_LEVEL, "l2": "sqrt(sum m (g - y)^2 / (3 sum m)), pixels in [0, 1]",
                    "threshold": threshold,
                    "threshold_source": "calibrated (tinyworld-copy)" if calibrated is not None else "fixed 0.5",
                    "sscd": embedder.protocol_dict()}
        impl = f"{IMPLEMENTATION}; {embedder.implementation}"

        def value(per_prompt: np.ndarray, higher: bool) -> MetricValue:
            v, lo, hi = mean_with_ci(per_prompt)
            return MetricValue(value=v, n=n_p, ci_low=lo, ci_high=hi, higher_is_better=higher, implementation=impl,
                               protocol=protocol, per_prompt={p: float(x) for p, x in zip(mem_prompts, per_prompt)})

        return {"be_sscd_mem": value(per["local_sscd"].max(axis=1), False),
                "be_l2_mem": value(per["local_l2"].mean(axis=1), True),
                "be_local_only_mem": value(local_only, False),
                "be_mask_area_mem": value(masks.reshape(n_p, -1).mean(axis=1), False)}
