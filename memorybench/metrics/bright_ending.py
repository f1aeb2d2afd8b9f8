"""Bright Ending masks and local copy scores (Chen, Liu, Shah and Xu, "Exploring Local
Memorization in Diffusion Models via Bright Ending Attention", ICLR 2025).

The observation: at the *last* denoising step, the cross-attention of the prompt's end token
(EOS) is bright on the part of the image that is memorized and dark elsewhere, while
non-memorized generations show no such pattern. The authors' map (their ``detect_mem.py``
and ``AttentionStore``): the conditional branch's attention probabilities at the final step,
averaged over heads, in the down-block cross-attention layers of the highest resolution
(Stable Diffusion: the two 64x64 layers of the first down block), averaged over those
layers, the EOS column taken; no threshold (they weight with the soft map). They localise
with 16 images per prompt.

Here:

- :func:`bright_ending_maps` samples prompts x seeds with a capturing processor on those
  ``attn2`` layers (the highest-resolution down blocks that have cross-attention: 8x8 on the
  tiny world, whose first down block has none) and returns one map per image, at the
  layers' resolution. The processor computes the probabilities on the side and calls the
  original processor, so sampling is unchanged.
- :func:`prompt_masks` averages a prompt's maps over its seeds, divides by the maximum
  (values in [0, 1]) and resizes bilinearly to image resolution: one mask per prompt, the
  region where this model's memorization of the prompt lives.
- :func:`local_copy_scores` compares a generation with its training image inside a mask:
  ``local_l2`` = sqrt(sum m (g - y)^2 / (3 sum m)), pixels in [0, 1] (the soft mask weights
  each pixel, as the authors weight the noise magnitude); ``local_sscd`` = SSCD cosine of the
  two images cropped to the bounding box of ``m >= crop_level``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from memorybench.model.hooks import attention_probabilities, installed_processors

if TYPE_CHECKING:
    from memorybench.metrics.sscd import SSCDEmbedder
    from memorybench.model.pipeline import PipelineAdapter, SamplerSettings

IMPLEMENTATION = "bright-ending/v1: eos attention, last step, highest-res down attn2, head+layer mean"


def end_token_index(pipe: "PipelineAdapter", prompt: str) -> int:
    """Position of the end-of-text token the text encoder sees for ``prompt`` (truncation included)."""
    tok = pipe.tokenizer
    ids = tok(prompt, truncation=True, max_length=tok.model_max_length)["input_ids"]
    return len(ids) - 1


def down_cross_attention_keys(pipe: "PipelineAdapter") -> list[str]:
    return [k for k in pipe.attn2_processor_keys() if k.startswith("down_blocks.")]


class EndTokenProbe:
    """Wraps a cross-attention processor; at the last sampling step records, per image of the
    conditional branch, the head-averaged attention of every pixel to that image's end token."""

    def __init__(self, inner, pipe, end_index: torch.Tensor, sink: list[torch.Tensor]):
        self.inner, self.pipe, self.end_index, self.sink = inner, pipe, end_index, sink

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        state = self.pipe.state
        if encoder_hidden_states is not None and state.step_index == state.num_steps - 1:
            probs = attention_probabilities(attn, hidden_states, encoder_hidden_states, attention_mask)
            cond = probs[state.cond_slice]  # (B, queries, tokens)
            idx = self.end_index.to(cond.device).view(-1, 1, 1).expand(-1, cond.shape[1], 1)
            self.sink.append(cond.gather(2, idx)[..., 0].cpu())
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)


def bright_ending_maps(pipe: "PipelineAdapter", prompts: Sequence[str], seeds: Sequence[int],
                       settings: "SamplerSettings", batch_size: int = 16) -> np.ndarray:
    """End-token attention maps (N, h, w) at the last step, one per (prompt, seed) pair."""
    keys = down_cross_attention_keys(pipe)
    if not keys:
        raise ValueError("the UNet has no down-block cross-attention layers to read a Bright Ending map from")
    lat_h, lat_w = pipe.latent_shape(settings.height, settings.width)[1:]
    out = []
    for start in range(0, len(prompts), batch_size):
        p, s = list(prompts[start:start + batch_size]), list(seeds[start:start + batch_size])
        end = torch.tensor([end_token_index(pipe, x) for x in p])
        current = pipe.unet.attn_processors
        sinks: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        probes = {k: EndTokenProbe(current[k], pipe, end, sinks[k]) for k in keys}
        with installed_processors(pipe, probes, owner="metric 'bright-ending-copy'"):
            pipe.sample_latents(p, s, settings)
        maps = {k: v[-1] for k, v in sinks.items() if v}  # (B, queries) per layer
        top = max(m.shape[1] for m in maps.values())  # the highest resolution among them
        chosen = torch.stack([m for m in maps.values() if m.shape[1] == top]).double().mean(dim=0)
        h = int(round(math.sqrt(top * lat_h / lat_w)))
        out.append(chosen.reshape(len(p), h, top // h).numpy())
    return np.concatenate(out)


def prompt_masks(maps: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """(P, seeds, h, w) maps -> (P, H, W) masks in [0, 1]: seed mean, / max, bilinear resize."""
    mean = torch.from_numpy(np.asarray(maps, dtype=np.float64)).mean(dim=1)
    mean = mean / mean.flatten(1).amax(dim=1).clamp_min(1e-30).view(-1, 1, 1)
    up = torch.nn.functional.interpolate(mean[:, None], size=image_size, mode="bilinear", align_corners=False)
    return up[:, 0].clamp(0.0, 1.0).numpy()


def crop_box(mask: np.ndarray, level: float) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the bounding box of ``mask >= level * mask.max()``."""
    ys, xs = np.nonzero(mask >= level * mask.max())
    return int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1


def local_l2(generations: np.ndarray, sources: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mask-weighted RMS pixel distance (N,) on [0, 1] pixels; masks (N, H, W)."""
    g = np.asarray(generations, dtype=np.float64) / 255.0
    y = np.asarray(sources, dtype=np.float64) / 255.0
    m = np.asarray(masks, dtype=np.float64)[..., None]
    return np.sqrt((m * (g - y) ** 2).sum(axis=(1, 2, 3)) / (3.0 * m.sum(axis=(1, 2, 3)).clip(1e-12)))


def local_sscd(generations: np.ndarray, sources: np.ndarray, masks: np.ndarray, embedder: "SSCDEmbedder",
               crop_level: float = 0.5) -> np.ndarray:
    """SSCD cosine (N,) of each generation and its source, both cropped to the mask's box."""
    crops_g, crops_y = [], []
    for g, y, m in zip(generations, sources, masks):
        y0, y1, x0, x1 = crop_box(m, crop_level)
        crops_g.append(np.ascontiguousarray(g[y0:y1, x0:x1]))
        crops_y.append(np.ascontiguousarray(y[y0:y1, x0:x1]))
    eg, ey = embedder.embed(crops_g), embedder.embed(crops_y)
    return np.einsum("nd,nd->n", eg, ey)


def local_copy_scores(generations: np.ndarray, sources: np.ndarray, masks: np.ndarray,
                      embedder: "SSCDEmbedder", crop_level: float = 0.5) -> dict[str, Any]:
    """Local (inside the mask) and whole-image SSCD and L2 of each generation to its source."""
    whole = np.einsum("nd,nd->n", embedder.embed(generations), embedder.embed(sources))
    full = np.ones(np.asarray(masks).shape, dtype=np.float64)
    return {"local_sscd": local_sscd(generations, sources, masks, embedder, crop_level),
            "local_l2": local_l2(generations, sources, masks),
            "whole_sscd": whole,
            "whole_l2": local_l2(generations, sources, full)}


__all__ = ["bright_ending_maps", "prompt_masks", "local_copy_scores", "local_sscd", "local_l2", "crop_box",
           "end_token_index", "EndTokenProbe", "IMPLEMENTATION"]
