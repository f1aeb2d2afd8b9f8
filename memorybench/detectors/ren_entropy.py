"""``ren-entropy``: entropy of cross-attention over the text tokens at the first step (Ren et
al., ECCV 2024, "Unveiling and mitigating memorization in text-to-image diffusion models
through cross attention").

Ren et al. observe that a prompt which triggers memorization draws cross-attention away
from the beginning-of-text token onto a few prompt (trigger) token embeddings, so the
attention distribution over the text positions is spread out: its entropy at the first
denoising step is *higher* for memorized prompts. Their released detection script scores
a prompt by that entropy (higher = memorized) at step 0 of one cross-attention layer of
SD; here the layer set is a setting and defaults to every ``attn2`` layer.

Per prompt: the conditional branch's attention probabilities are averaged over heads,
query positions (pixels) and the chosen layers into one distribution over the text
positions (BOS, prompt, EOS, padding), its entropy is taken per seed, and the mean over
seeds is the score. ``direction = "lower"`` flips the sign, for models where memorization
concentrates attention instead.

Capture is a wrapper processor on each ``attn2`` key: it calls the original processor
for the output (so generation is unchanged) and recomputes the attention probabilities
from the same query and key projections on the side; the originals are put back after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from memorybench.api.detector import DetectionScores, TrajectoryConfig, TrajectoryDetector
from memorybench.model.hooks import attention_probabilities, installed_processors
from memorybench.model.trajectory import per_prompt
from memorybench.errors import ConfigError
from memorybench.api.detector import register_detector


@dataclass
class RenEntropyConfig(TrajectoryConfig):
    """``steps``: the entropy is averaged over the first k steps (Ren's detector: step 0 only)."""

    layers: list[int] | None = None  # indices into the UNet's attn2 layers (order of attn_processors); None = all
    direction: Literal["higher", "lower"] = "higher"  # which entropy means memorized (paper: higher)


class AttentionProbe:
    """Wraps a cross-attention processor; records head- and pixel-averaged attention
    probabilities of the conditional branch at the first ``steps`` steps."""

    def __init__(self, inner, pipe, steps: int, sink: list[torch.Tensor]):
        self.inner, self.pipe, self.steps, self.sink = inner, pipe, steps, sink

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        state = self.pipe.state
        if 0 <= state.step_index < self.steps and encoder_hidden_states is not None:
            probs = attention_probabilities(attn, hidden_states, encoder_hidden_states, attention_mask)
            self.sink.append(probs.mean(dim=1)[state.cond_slice])  # averaged over query positions
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, *args, **kwargs)


def entropy(p: torch.Tensor, dim: int = -1) -> torch.Tensor:
    p = p.double()
    return -(p * p.clamp_min(1e-30).log()).sum(dim=dim)


@register_detector()
class RenEntropy(TrajectoryDetector):
    name = "ren-entropy"
    description = "Entropy of cross-attention over the text tokens at the first step (Ren et al. 2024)"
    Config = RenEntropyConfig
    reference = ("Ren et al., ECCV 2024 (MemAttn): entropy of the token attention at step 0, higher = memorized; "
                 "SD uses one attn2 layer, the tiny world all of them")

    def _keys(self, pipe) -> list[str]:
        keys = pipe.attn2_processor_keys()
        if self.config.layers is None:
            return keys
        bad = [i for i in self.config.layers if not 0 <= i < len(keys)]
        if bad:
            raise ConfigError(f"detector '{self.name}': layers {bad} out of range: the model has {len(keys)} attn2 layers")
        return [keys[i] for i in self.config.layers]

    def score(self, pipe, prompts, settings) -> DetectionScores:
        cfg = self.config
        keys = self._keys(pipe)
        current = pipe.unet.attn_processors
        sinks: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        probes = {k: AttentionProbe(current[k], pipe, cfg.steps, sinks[k]) for k in keys}
        with installed_processors(pipe, probes, owner=f"detector '{self.name}'"):
            for _ in self.trajectory(pipe, prompts, settings):
                pass
        # (layers, steps, rows, tokens) -> one distribution per step and row; entropy per
        # step, then the mean over steps (as Ren's script does) and seeds
        dist = torch.stack([torch.stack(sinks[k]) for k in keys]).mean(dim=0)
        ent = per_prompt(entropy(dist).mean(dim=0).cpu(), len(prompts))  # (prompts, seeds)
        mean_entropy = ent.mean(dim=1)
        bos = per_prompt(dist[:, :, 0].double().mean(dim=0).cpu(), len(prompts)).mean(dim=1)
        sign = 1.0 if cfg.direction == "higher" else -1.0
        return DetectionScores((sign * mean_entropy).numpy(),
                               {"entropy": mean_entropy.numpy(), "bos_attention": bos.numpy()})
