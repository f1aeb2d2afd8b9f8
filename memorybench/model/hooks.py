"""Installing cross-attention processors for a block of code, and putting the old ones back.

Methods (through their ``attention_processors`` hook) and detectors (to read attention maps)
both swap processors on the UNet's cross-attention (``.attn2.``) keys; both go through
``installed_processors``, so a processor left behind by an exception is impossible and the
originals come back as the very same objects. ``attention_probabilities`` is what a
cross-attention layer attends to, for processors that read it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterator

import torch

from memorybench.errors import ConfigError

if TYPE_CHECKING:
    from memorybench.model.pipeline import PipelineAdapter


@contextlib.contextmanager
def installed_processors(pipe: "PipelineAdapter", processors: dict[str, Any] | None,
                         owner: str = "plugin") -> Iterator[None]:
    """Install ``processors`` (cross-attention keys only) for the block; restore on exit.

    The processors present on entry are snapshot first, so whatever the block does to
    the UNet's processors (even outside this call) is undone when it ends."""
    unet = pipe.unet
    saved = dict(unet.attn_processors)
    processors = processors or {}
    bad = [k for k in processors if ".attn2." not in k or k not in saved]
    if bad:
        raise ConfigError(f"{owner} set processors on non-cross-attention keys: {bad[:3]}")
    try:
        if processors:
            unet.set_attn_processor({**saved, **processors})  # diffusers pops from the dict
        yield
    finally:
        unet.set_attn_processor(dict(saved))


@torch.no_grad()
def attention_probabilities(attn, hidden_states, context, attention_mask) -> torch.Tensor:
    """(batch, queries, tokens): softmax(QK^T * scale), averaged over heads, in float32."""
    x = hidden_states
    if x.ndim == 4:
        x = x.flatten(2).transpose(1, 2)
    if getattr(attn, "group_norm", None) is not None:
        x = attn.group_norm(x.transpose(1, 2)).transpose(1, 2)
    if getattr(attn, "norm_cross", None):
        context = attn.norm_encoder_hidden_states(context)
    batch, queries = x.shape[0], x.shape[1]
    q = attn.head_to_batch_dim(attn.to_q(x)).float()
    k = attn.head_to_batch_dim(attn.to_k(context)).float()
    logits = torch.bmm(q, k.transpose(1, 2)) * attn.scale
    if attention_mask is not None:
        logits = logits + attn.prepare_attention_mask(attention_mask, context.shape[1], batch).float()
    probs = logits.softmax(dim=-1)
    return probs.reshape(batch, attn.heads, queries, -1).mean(dim=1)
