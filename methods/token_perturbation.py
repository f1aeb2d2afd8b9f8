"""``rta``, ``rna``, ``gni``: prompt and text-embedding perturbations (Somepalli et al. 2023).

Somepalli et al., "Understanding and Mitigating Copying in Diffusion Models" (NeurIPS 2023),
perturb the text condition at inference so a memorized caption no longer hits its exact
training embedding:

- ``rta`` (random token addition): insert ``num_tokens`` tokens drawn uniformly from the
  tokenizer's vocabulary (special tokens excluded) at random word positions;
- ``rna`` (random number addition): insert ``num_numbers`` random integers in [0, 100000)
  at random word positions;
- ``gni`` (Gaussian noise injection): add ``noise_scale * N(0, I)`` to the text embedding.

Defaults follow the authors' public code (somepago/DCR ``sd_mitigation.py``: 4 insertions,
numbers below 100000, lambda 0.1). Differences, by construction of the harness: the
perturbation is drawn per (prompt, seed) rather than once per prompt, so every image of a
suite is reproducible on its own; GNI perturbs the conditional embedding only (DCR adds the
noise to the unconditional one as well, which the ``prompt_embeds`` hook cannot change).

The random draws are a pure function of the prompt, the image's initial noise (itself a
pure function of its seed) and ``seed``: the same (prompt, seed) always gets the same
perturbation, in any batch, in a resumed run, from the cache. The harness's cache key uses
the original prompt and the config hash, which identify the perturbed prompt exactly.

On the tiny world the tokenizer is word-level: inserted numbers are unknown words (one
``<|unk|>`` token each), and random tokens are any of its 84 words.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from memorybench.api.method import Method
from memorybench.api.method import register_method

REFERENCE = ("Somepalli et al. 2023, Understanding and Mitigating Copying in Diffusion Models (NeurIPS); "
             "defaults from the authors' code somepago/DCR sd_mitigation.py (rand_aug_repeats=4, "
             "np.random.choice(100000), rand_noise_lam=0.1)")


def perturbation_rng(prompt: str, initial_latent: torch.Tensor, salt: str, seed: int) -> np.random.Generator:
    """A generator fixed by (prompt, this image's initial noise, method, seed).

    The initial latent is drawn from the image's own seed, so it identifies the seed without
    the hook being told it."""
    h = hashlib.sha256()
    h.update(f"{salt}|{seed}|{prompt}|".encode())
    h.update(initial_latent.detach().float().cpu().contiguous().numpy().tobytes())
    return np.random.default_rng(int.from_bytes(h.digest()[:8], "little"))


def insert_words(prompt: str, words: list[str], rng: np.random.Generator) -> str:
    """Insert each word at a uniformly random gap between the prompt's words (ends included)."""
    parts = prompt.split(" ")
    for word in words:
        parts.insert(int(rng.integers(0, len(parts) + 1)), word)
    return " ".join(parts)


def vocabulary_words(tokenizer) -> list[str]:
    """Every non-special token of the tokenizer, decoded to text (stable order)."""
    special = set(tokenizer.all_special_ids)
    words = []
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        word = tokenizer.decode([token_id]).strip()
        if word:
            words.append(word)
    return words


class _PromptEdit(Method):
    """Re-encode each prompt after an edit drawn per (prompt, seed)."""

    kind = "inference"

    def edit(self, prompt: str, rng: np.random.Generator, pipe) -> str:
        raise NotImplementedError

    def edited_prompts(self, pipe, prompts: list[str], latents: torch.Tensor) -> list[str]:
        return [self.edit(p, perturbation_rng(p, latents[i], self.name, self.config.seed), pipe)
                for i, p in enumerate(prompts)]

    def prompt_embeds(self, pipe, cond, uncond, latents, settings, prompts):
        return pipe.encode_prompts(self.edited_prompts(pipe, prompts, latents))


@dataclass
class RandomTokenConfig:
    num_tokens: int = 4  # tokens inserted per prompt (DCR rand_aug_repeats)
    seed: int = 0  # salt of the per-(prompt, seed) draws

    def __post_init__(self) -> None:
        if self.num_tokens < 0:
            raise ValueError(f"num_tokens must be >= 0, got {self.num_tokens}")


@register_method()
class RandomTokenAddition(_PromptEdit):
    name = "rta"
    description = "Insert random vocabulary tokens into the prompt (Somepalli et al. 2023)"
    Config = RandomTokenConfig
    reference = REFERENCE

    def __init__(self, config=None):
        super().__init__(config)
        self._vocab: tuple[int, list[str]] | None = None

    def edit(self, prompt, rng, pipe):
        if self._vocab is None or self._vocab[0] != id(pipe.tokenizer):
            self._vocab = (id(pipe.tokenizer), vocabulary_words(pipe.tokenizer))
        vocab = self._vocab[1]
        return insert_words(prompt, [vocab[int(rng.integers(0, len(vocab)))] for _ in range(self.config.num_tokens)], rng)


@dataclass
class RandomNumberConfig:
    num_numbers: int = 4  # numbers inserted per prompt (DCR rand_aug_repeats)
    max_number: int = 100000  # numbers are drawn from [0, max_number) (DCR)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_numbers < 0 or self.max_number < 1:
            raise ValueError("num_numbers must be >= 0 and max_number >= 1")


@register_method()
class RandomNumberAddition(_PromptEdit):
    name = "rna"
    description = "Insert random numbers into the prompt (Somepalli et al. 2023)"
    Config = RandomNumberConfig
    reference = REFERENCE

    def edit(self, prompt, rng, pipe):
        return insert_words(prompt, [str(int(rng.integers(0, self.config.max_number)))
                                     for _ in range(self.config.num_numbers)], rng)


@dataclass
class GaussianNoiseConfig:
    noise_scale: float = 0.1  # lambda: std of the noise added to every token embedding
    seed: int = 0

    def __post_init__(self) -> None:
        if self.noise_scale < 0:
            raise ValueError(f"noise_scale must be >= 0, got {self.noise_scale}")


@register_method()
class GaussianNoiseInjection(Method):
    name = "gni"
    kind = "inference"
    description = "Add Gaussian noise to the conditional text embedding (Somepalli et al. 2023)"
    Config = GaussianNoiseConfig
    reference = REFERENCE

    def prompt_embeds(self, pipe, cond, uncond, latents, settings, prompts):
        noise = []
        for i, p in enumerate(prompts):
            rng = perturbation_rng(p, latents[i], self.name, self.config.seed)
            noise.append(torch.from_numpy(rng.standard_normal(tuple(cond.shape[1:]), dtype=np.float32)))
        return cond + self.config.noise_scale * torch.stack(noise).to(cond.device, cond.dtype)
