"""``attn-rescale``: cross-attention rescaling at inference (Ren et al., "Unveiling and
Mitigating Memorization in Text-to-image Diffusion Models through Cross Attention", ECCV 2024).

Memorized prompts concentrate cross-attention on a few prompt tokens. In the conditional
branch only, during the first steps, this method multiplies the attention logit of the BOS
token (position 0) by ``c1``, which pulls attention back to BOS, and masks attention to the
padding tokens after the prompt's first EOS. The unconditional branch and later steps use
the model's own attention processor unchanged.

It works only through ``attn2`` (cross-attention) processors. The processors read the
batch's prompts (for the padding mask), the step index and the CFG layout
(``[uncond; cond]``) from ``pipe.state``.

Defaults: c1 = 1.25 and padding masked, from the authors' inference-time mitigation
command (renjie3/MemAttn ``local_cmd_inference_time_mitigation.sh``: ``--c1 1.25
--cross_attn_mask``; their mask keeps BOS, the prompt and its first EOS). MemBench uses
c1 = 1.1. Ren's public code rescales at every step (a commented-out variant limits it to
the first 30 of 50); ``early_fraction`` sets the share of steps that are rescaled.

In SD the BOS token is the attention sink, so c1 > 1 moves attention from the trigger
tokens to BOS; in the tiny world the padding tokens are the sink instead, so the mechanism
has little to act on there. The measured trade-off over c1 is on the methods page of the docs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from memorybench.api.method import Method
from memorybench.api.method import register_method


@dataclass
class AttentionRescaleConfig:
    c1: float = 1.25  # BOS logit factor (Ren's code 1.25; MemBench 1.1)
    mask_padding: bool = True  # no attention to tokens after the prompt's first EOS
    early_fraction: float = 1.0  # share of the denoising steps that are rescaled (from the first)

    def __post_init__(self) -> None:
        if self.c1 <= 0:
            raise ValueError(f"c1 must be > 0, got {self.c1}")
        if not 0.0 <= self.early_fraction <= 1.0:
            raise ValueError(f"early_fraction must be in [0, 1], got {self.early_fraction}")


def prompt_token_counts(tokenizer, prompts: list[str]) -> list[int]:
    """Tokens each prompt occupies before padding (BOS, the words, the first EOS)."""
    ids = tokenizer(list(prompts), truncation=True, max_length=tokenizer.model_max_length).input_ids
    return [len(x) for x in ids]


class PromptTokenMask:
    """Which tokens the conditional branch may attend to, for the batch in ``pipe.state``:
    (B, L) bool, True up to each prompt's first EOS. Computed once per batch of prompts."""

    def __init__(self, tokenizer, state) -> None:
        self.tokenizer, self.state = tokenizer, state
        self._prompts: list[str] | None = None  # the state's list the mask was computed for
        self._keep: torch.Tensor | None = None

    def keep(self, n_tokens: int) -> torch.Tensor | None:
        prompts = self.state.prompts  # a new list per batch (SamplingState.begin): identity is enough
        if not prompts:
            return None
        if prompts is not self._prompts:
            positions = torch.arange(n_tokens)
            self._keep = torch.stack([positions < n for n in prompt_token_counts(self.tokenizer, prompts)])
            self._prompts = prompts
        return self._keep


class RescaledCrossAttention:
    """An ``attn2`` processor: BOS logit x c1 and padding masked in the conditional half of
    the CFG batch at early steps; anything else goes to the wrapped processor."""

    def __init__(self, original, state, token_mask: PromptTokenMask, config: AttentionRescaleConfig):
        self.original = original
        self.state = state  # pipe.state (memorybench.model.sampling.SamplingState)
        self.token_mask = token_mask
        self.config = config

    def active(self, batch_size: int) -> bool:
        s = self.state
        n_early = math.ceil(self.config.early_fraction * s.num_steps)
        return s.cfg and 0 <= s.step_index < n_early and batch_size == 2 * s.batch_size

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is None or not self.active(hidden_states.shape[0]):
            return self.original(attn, hidden_states, encoder_hidden_states=encoder_hidden_states,
                                 attention_mask=attention_mask, temb=temb, **kwargs)
        unc, cond = self.state.uncond_slice, self.state.cond_slice

        def rows(mask, sl):
            return mask[sl] if mask is not None and mask.shape[0] == hidden_states.shape[0] else mask

        out_u = self.original(attn, hidden_states[unc], encoder_hidden_states=encoder_hidden_states[unc],
                              attention_mask=rows(attention_mask, unc),
                              temb=temb[unc] if temb is not None else None, **kwargs)
        out_c = self.rescaled(attn, hidden_states[cond], encoder_hidden_states[cond], rows(attention_mask, cond),
                              temb[cond] if temb is not None else None)
        return torch.cat([out_u, out_c])

    def rescaled(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb):
        """Cross-attention with the BOS logit scaled and padding masked (diffusers' steps otherwise)."""
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(b, channel, height * width).transpose(1, 2)
        b, n_tokens, _ = encoder_hidden_states.shape
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        heads = attn.heads
        query = query.view(b, -1, heads, query.shape[-1] // heads).transpose(1, 2)  # (b, h, q, d)
        key = key.view(b, -1, heads, key.shape[-1] // heads).transpose(1, 2)  # (b, h, k, d)
        value = value.view(b, -1, heads, value.shape[-1] // heads).transpose(1, 2)

        logits = (query.float() @ key.float().transpose(-1, -2)) * attn.scale  # (b, h, q, k)
        logits[..., 0] = logits[..., 0] * self.config.c1
        if attention_mask is not None:
            mask = attn.prepare_attention_mask(attention_mask, n_tokens, b)  # (b*h, q or 1, k)
            logits = logits + mask.view(b, heads, -1, n_tokens).float()
        keep = self.token_mask.keep(n_tokens) if self.config.mask_padding else None
        if keep is not None and keep.shape == (b, n_tokens):
            logits = logits.masked_fill(~keep.to(logits.device)[:, None, None, :], float("-inf"))
        probs = logits.softmax(dim=-1).to(value.dtype)
        hidden_states = (probs @ value).transpose(1, 2).reshape(b, -1, heads * value.shape[-1])

        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(b, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


@register_method()
class AttentionRescale(Method):
    name = "attn-rescale"
    kind = "inference"
    description = "Scale the BOS cross-attention logit and mask padding in the conditional branch (Ren et al. 2024)"
    Config = AttentionRescaleConfig
    reference = ("Ren et al., Unveiling and Mitigating Memorization in Text-to-image Diffusion Models through "
                 "Cross Attention, ECCV 2024; code renjie3/MemAttn: --c1 1.25 --cross_attn_mask, every step "
                 "(MemBench: c1 = 1.1)")

    def attention_processors(self, pipe):
        current = pipe.unet.attn_processors
        token_mask = PromptTokenMask(pipe.tokenizer, pipe.state)
        return {key: RescaledCrossAttention(current[key], pipe.state, token_mask, self.config)
                for key in pipe.attn2_processor_keys()}
