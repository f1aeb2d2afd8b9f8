"""Architectures of the tiny world: a Stable-Diffusion-shaped latent diffusion model.

Same parts as SD 1.x, scaled down: an ``AutoencoderKL`` (64x64 RGB <-> 16x16 latents), a
``UNet2DConditionModel`` with ``CrossAttnDownBlock2D`` / ``CrossAttnUpBlock2D`` transformer
blocks (self-attention ``attn1``, cross-attention ``attn2`` over the text tokens, a GEGLU
feed-forward whose second Linear is ``ff.net[2]``), a ``CLIPTextModel`` over a word-level
tokenizer (BOS ``<|startoftext|>``, EOS ``<|endoftext|>``, pad = EOS as in SD 1.x), and a
``DDIMScheduler`` (1000 steps, epsilon prediction, SD's scaled-linear betas). The folder
written by :func:`save_pipeline` loads with ``StableDiffusionPipeline.from_pretrained``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from memorybench.model.tokenizer import build_word_tokenizer  # noqa: E402


PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclasses.dataclass
class TinyWorldConfig:
    """Everything that defines a tiny world's architecture and training recipe."""

    data_seed: int = 0
    n_general: int = 3000
    dup_high: int = 300
    dup_low: int = 100
    # general captions' grammar and palette (datasets/tinyworld/generator.py DATA_VERSIONS); a
    # manifest without this field was trained on version 1; the shipped world is version 5
    data_version: int = 5
    train_seed: int = 0
    # text encoder
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    max_length: int = 20
    # VAE (64 -> 16)
    vae_channels: tuple[int, ...] = (16, 32, 64)
    latent_channels: int = 16
    vae_steps: int = 4000
    vae_batch: int = 16
    vae_lr: float = 1e-3
    vae_kl: float = 1e-6
    vae_photo_share: float = 0.5  # share of each VAE batch drawn from the photo crops
    # UNet (16x16 latents)
    unet_channels: tuple[int, ...] = (32, 64, 64)
    unet_layers: int = 1
    attn_levels: tuple[bool, ...] = (False, True, True)  # cross-attention transformer blocks per level
    head_dim: int = 32
    unet_steps: int = 7000
    batch: int = 48
    lr: float = 1e-3
    warmup: int = 100
    ema: float = 0.995
    caption_dropout: float = 0.1
    # what the UNet regresses: "epsilon" (SD 1.x) or "v_prediction" (SD 2.x)
    prediction_type: str = "v_prediction"
    # tiny CLIP for CLIP score
    clip_steps: int = 400
    clip_batch: int = 256
    clip_lr: float = 1e-3
    # sampling defaults written into the scheduler config
    clip_sample: bool = False  # DDIM x0 clipping; StableDiffusionPipeline forces it off anyway
    clip_sample_range: float = 4.0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def __post_init__(self) -> None:
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        from memorybench.datasets.tinyworld.generator import check_data_version

        check_data_version(self.data_version)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TinyWorldConfig":
        from memorybench.core.config import config_from_dict

        return config_from_dict(cls, {"data_version": 1, **d}, owner="tiny-world config")

    def data_kwargs(self) -> dict[str, int]:
        return {"n_general": self.n_general, "dup_high": self.dup_high, "dup_low": self.dup_low,
                "data_version": self.data_version}


def tiny_test_config() -> TinyWorldConfig:
    """A very small config for CI (trains in seconds)."""
    return TinyWorldConfig(
        n_general=200,
        text_width=32,
        text_layers=1,
        text_heads=2,
        vae_channels=(8, 16, 16, 16),
        latent_channels=4,
        vae_steps=30,
        vae_batch=16,
        unet_channels=(16, 32, 32),
        head_dim=16,
        unet_steps=40,
        batch=16,
        lr=2e-3,
        warmup=5,
        ema=0.9,
        clip_steps=20,
        clip_batch=32,
    )


# ----------------------------------------------------------------------------- tokenizer


def build_tokenizer(vocab_words: list[str], max_length: int):
    """A word-level tokenizer shaped like SD's CLIP tokenizer (the harness's own)."""
    return build_word_tokenizer(vocab_words, max_length)


def tokenize(tokenizer, prompts: list[str]):
    return tokenizer(
        list(prompts), padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids


# ----------------------------------------------------------------------------- components


def build_text_encoder(cfg: TinyWorldConfig, vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    tc = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=cfg.text_width,
        intermediate_size=cfg.text_width * 4,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_length,
        projection_dim=cfg.text_width,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
        hidden_act="quick_gelu",
    )
    return CLIPTextModel(tc)


def build_vae(cfg: TinyWorldConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=1,
        latent_channels=cfg.latent_channels,
        norm_num_groups=min(32, cfg.vae_channels[0]),
        sample_size=64,
        scaling_factor=1.0,
    )


def build_unet(cfg: TinyWorldConfig):
    from diffusers import UNet2DConditionModel

    ch = tuple(cfg.unet_channels)
    return UNet2DConditionModel(
        sample_size=64 // 2 ** (len(cfg.vae_channels) - 1),
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attn_levels),
        up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attn_levels)),
        block_out_channels=ch,
        layers_per_block=cfg.unet_layers,
        cross_attention_dim=cfg.text_width,
        attention_head_dim=[max(1, c // cfg.head_dim) for c in ch],  # diffusers: number of heads
        norm_num_groups=min(32, ch[0]),
        act_fn="silu",
    )


def scheduler_config(cfg: TinyWorldConfig) -> dict[str, Any]:
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=cfg.prediction_type,
        clip_sample=bool(cfg.clip_sample),
        clip_sample_range=float(cfg.clip_sample_range),
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )


def build_scheduler(cfg: TinyWorldConfig, kind: str = "ddim"):
    from diffusers import DDIMScheduler, DDPMScheduler

    c = scheduler_config(cfg)
    if kind == "ddpm":
        c.pop("set_alpha_to_one")
        return DDPMScheduler(**c)
    return DDIMScheduler(**c)


def save_pipeline(components: dict, folder: Path, fp16: bool = True) -> None:
    """Write a ``StableDiffusionPipeline`` folder (fp16 safetensors)."""
    import torch
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    comps = dict(components)
    if fp16:
        for k in ("vae", "text_encoder", "unet"):
            comps[k] = comps[k].to(torch.float16)
    pipe = StableDiffusionPipeline(**comps, requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    if fp16:
        for k in ("vae", "text_encoder", "unet"):
            comps[k].to(torch.float32)
    # model_index: the tokenizer class is the fast word-level one
    mi = json.loads((folder / "model_index.json").read_text())
    mi["tokenizer"] = ["transformers", "PreTrainedTokenizerFast"]
    (folder / "model_index.json").write_text(json.dumps(mi, indent=2, sort_keys=True) + "\n")


def count_params(module) -> int:
    return sum(p.numel() for p in module.parameters())
