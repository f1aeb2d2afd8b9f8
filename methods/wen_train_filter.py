"""``wen-train-filter``: leave memorizing samples out of the fine-tune (Wen, Liu, Chen and Lyu,
"Detecting, Explaining, and Mitigating Memorization in Diffusion Models", ICLR 2024; their
training-time mitigation).

The paper's detection signal is the magnitude of the text-conditional part of the noise
prediction, ``||eps(x_t, t, c) - eps(x_t, t, "")||_2``: large for a caption the model has
memorized, small otherwise. During fine-tuning the same magnitude is measured for every
sample of every step, at the step's own noised latent and timestep, with the model as it
is at that step (its conditional prediction is the one the loss uses; the empty-caption
prediction is one extra forward pass without gradients). A sample whose magnitude reaches
``threshold`` gets weight 0, i.e. it is left out of that step's loss; the loss is the mean
over the samples kept, and a step whose samples are all left out makes no update. As the
model starts to memorize a duplicated sample its magnitude grows past the threshold and the
sample stops being learned; samples that are not memorized train as usual.

The magnitude is the L2 norm over the whole latent (C x H x W), so its scale depends on the
latent size and the model: the default ``threshold`` 2.0 is the paper's value for Stable
Diffusion v1 (4 x 64 x 64 latents; the public training script takes it as
``--hard_threshold`` without a default). On other models, choose it from the magnitudes the
report records (``wen_train_filter.norm_quantiles_protected`` and ``norm_quantiles_others``:
the magnitudes of the samples seen, and the share left out in each group).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from memorybench.api.method import Method, MethodContext, TrainingHook, register_method

if TYPE_CHECKING:
    from memorybench.api.method import FinetuneJob

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass
class WenTrainFilterConfig:
    threshold: float = 2.0  # samples with ||eps(x_t,c) - eps(x_t,"")||_2 >= threshold are left out of the step

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ValueError(f"threshold must be > 0, got {self.threshold}")


def text_noise_magnitude(unet: torch.nn.Module, latents_noisy: torch.Tensor, timesteps: torch.Tensor,
                         null_embedding: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """(B,) ``||prediction - eps(x_t, t, "")||_2`` over each sample's whole latent."""
    with torch.no_grad():
        null = null_embedding.expand(len(latents_noisy), *null_embedding.shape[1:])
        unconditional = unet(latents_noisy, timesteps, null).sample
    return (prediction.float() - unconditional.float()).flatten(1).norm(dim=1)


class _FilterHook(TrainingHook):
    def __init__(self, threshold: float, null_embedding: torch.Tensor, protected: torch.Tensor, stats: dict):
        self.threshold = threshold
        self.null = null_embedding
        self.protected = protected  # (P, L, D) embeddings of the protected captions, for the report
        self.stats = stats
        self.norms: list[torch.Tensor] = []
        self.groups: list[torch.Tensor] = []

    def _matches(self, text_embeddings: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        """(B,) whether each row equals one of ``reference``'s (to 1e-4: batching may round)."""
        if len(reference) == 0:
            return torch.zeros(len(text_embeddings), dtype=torch.bool)
        diff = (text_embeddings[:, None].float() - reference[None].to(text_embeddings.device).float()).abs()
        return (diff.flatten(2).amax(dim=2) < 1e-4).any(dim=1).cpu()

    def sample_weights(self, latents_noisy, timesteps, text_embeddings, unet, prediction):
        norms = text_noise_magnitude(unet, latents_noisy, timesteps, self.null, prediction)
        out = norms >= self.threshold
        # for the report only: which samples carry a protected caption, which a dropped one
        dropped = self._matches(text_embeddings, self.null)
        protected = self._matches(text_embeddings, self.protected) & ~dropped
        others = ~protected & ~dropped
        s, out_cpu = self.stats, out.cpu()
        s["samples_seen"] += len(norms)
        s["samples_left_out"] += int(out.sum())
        s["steps_without_update"] += int(bool(out.all()))
        for group, mask in (("protected", protected), ("others", others)):
            s[f"{group}_seen"] += int(mask.sum())
            s[f"{group}_left_out"] += int((out_cpu & mask).sum())
            s[f"left_out_share_{group}"] = (s[f"{group}_left_out"] / s[f"{group}_seen"]) if s[f"{group}_seen"] else None
        self.norms.append(norms.detach().cpu())
        self.groups.append(protected.long() - others.long())  # 1 protected, -1 others, 0 dropped caption
        all_norms, all_groups = torch.cat(self.norms), torch.cat(self.groups)
        for group, code in (("protected", 1), ("others", -1)):
            part = all_norms[all_groups == code]
            s[f"norm_quantiles_{group}"] = ({str(q): round(float(v), 5) for q, v in
                                             zip(QUANTILES, torch.quantile(part, torch.tensor(QUANTILES)))}
                                            if len(part) else {})
        return (~out).to(prediction.dtype)


@register_method()
class WenTrainFilter(Method):
    name = "wen-train-filter"
    kind = "training"
    description = ("Fine-tune leaving out each step's samples whose text-conditional noise magnitude "
                   "||eps(x_t,c) - eps(x_t,'')|| reaches a threshold (Wen et al.)")
    reference = ("Wen, Liu, Chen & Lyu 2024, Detecting, Explaining, and Mitigating Memorization in Diffusion "
                 "Models, ICLR 2024 (training-time mitigation; threshold 2 for Stable Diffusion v1 latents)")
    Config = WenTrainFilterConfig

    def training_hook(self, pipe, ctx: MethodContext, job: "FinetuneJob") -> TrainingHook:
        with torch.no_grad():
            null = pipe.encode_prompts([""])
            protected = (pipe.encode_prompts(list(job.protected_captions)) if job.protected_captions
                         else null[:0])
        stats = {"threshold": self.config.threshold, "samples_seen": 0, "samples_left_out": 0,
                 "protected_seen": 0, "protected_left_out": 0, "others_seen": 0, "others_left_out": 0,
                 "steps_without_update": 0,
                 "left_out_share_protected": None, "left_out_share_others": None,
                 "norm_quantiles_protected": {}, "norm_quantiles_others": {},
                 "magnitude": "L2 norm over the whole latent of eps(x_t, t, caption) - eps(x_t, t, '') at each "
                              "sample's training noise and timestep"}
        ctx.report["wen_train_filter"] = stats
        return _FilterHook(self.config.threshold, null, protected.float(), stats)
