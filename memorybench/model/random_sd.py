"""Stable Diffusion pipelines with random weights, built in code: the real path without real weights.

Nothing can be downloaded here, yet the harness must be proven on the models users run.
These builders reproduce the published *architectures* (the same module types, text
widths, prediction types and conditioning as the released configs) with random weights:

* ``sd15``: SD v1.5. Epsilon prediction, CLIP ViT-L/14 text encoder (768-d, 12 layers, pads
  with EOS), UNet channels 320/640/1280/1280 with 8 heads.
* ``sd21``: SD v2.1. v-prediction, OpenCLIP ViT-H/14 text encoder (1024-d, 23 layers, pads
  with ``"!"``), linear projections in the transformers, head dims 5/10/20/20, upcast attention.
* ``sdxl``: SDXL base 1.0. Two text encoders (CLIP-L and OpenCLIP bigG, hidden states
  concatenated to 2048-d), pooled text embeddings and added time ids, UNet channels
  320/640/1280 with 1/2/10 transformer layers.

``size="full"`` builds the released sizes (SD 1.5: 860M UNet parameters; SDXL: 2.6B).
``size="small"`` keeps every structural trait above (text widths, head layout, linear
projections, prediction type, SDXL's added conditioning) with narrow channels and two text
layers, so that tests and smoke runs take seconds. The tokenizer is a real ``CLIPTokenizer``
built from open_clip's byte-pair vocabulary. Images from these pipelines mean nothing.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from memorybench.errors import ConfigError

KINDS = ("sd15", "sd21", "sdxl")
SIZES = ("small", "full")

# The released schedulers' training schedule (all three models share it).
_SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                 beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1)

# name -> (hidden, intermediate, layers, heads, act, projection_dim, pad token)
_TEXT_ENCODERS = {
    "clip-l": (768, 3072, 12, 12, "quick_gelu", 768, "<|endoftext|>"),
    "openclip-h": (1024, 4096, 23, 16, "gelu", 512, "!"),
    "openclip-bigg": (1280, 5120, 32, 20, "gelu", 1280, "!"),
}


def _text_encoder(name: str, size: str, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    hidden, inter, layers, heads, act, proj, _ = _TEXT_ENCODERS[name]
    config = CLIPTextConfig(
        vocab_size=49408, hidden_size=hidden, intermediate_size=inter if size == "full" else hidden,
        num_hidden_layers=layers if size == "full" else 2, num_attention_heads=heads,
        max_position_embeddings=77, hidden_act=act, projection_dim=proj,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=1 if name == "clip-l" else 0,
    )
    return (CLIPTextModelWithProjection if with_projection else CLIPTextModel)(config)


def _unet(kind: str, size: str):
    from diffusers import UNet2DConditionModel

    full = size == "full"
    if kind == "sdxl":
        return UNet2DConditionModel(
            sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
            block_out_channels=(320, 640, 1280) if full else (40, 80, 160),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            transformer_layers_per_block=(1, 2, 10) if full else (1, 1, 2),
            attention_head_dim=(5, 10, 20), cross_attention_dim=2048, use_linear_projection=True,
            addition_embed_type="text_time", addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816, norm_num_groups=32 if full else 8,
        )
    common = dict(
        sample_size=96 if kind == "sd21" else 64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280) if full else (40, 80, 160, 160),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        norm_num_groups=32 if full else 8,
    )
    if kind == "sd15":
        return UNet2DConditionModel(**common, cross_attention_dim=768, attention_head_dim=8)
    return UNet2DConditionModel(**common, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                                use_linear_projection=True, upcast_attention=True)


def _vae(kind: str, size: str):
    from diffusers import AutoencoderKL

    full = size == "full"
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        block_out_channels=(128, 256, 512, 512) if full else (16, 16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        norm_num_groups=32 if full else 8, sample_size={"sd15": 512, "sd21": 768, "sdxl": 1024}[kind],
        scaling_factor=0.13025 if kind == "sdxl" else 0.18215,
    )


def build_random_sd(kind: str = "sd15", size: str = "small", seed: int = 0) -> Any:
    """A diffusers pipeline with the architecture of ``kind`` and random weights (seeded)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    from memorybench.model.tokenizer import build_clip_tokenizer

    if kind not in KINDS:
        raise ConfigError(f"unknown model kind '{kind}': choose one of {', '.join(KINDS)}")
    if size not in SIZES:
        raise ConfigError(f"unknown size '{size}': choose one of {', '.join(SIZES)}")
    torch.manual_seed(seed)
    vocab_dir = Path(tempfile.mkdtemp(prefix="memorybench-clip-bpe-"))
    prediction = "v_prediction" if kind == "sd21" else "epsilon"
    scheduler = DDIMScheduler(**_SCHEDULE, prediction_type=prediction)
    unet, vae = _unet(kind, size), _vae(kind, size)
    if kind == "sdxl":
        pipe = StableDiffusionXLPipeline(
            vae=vae, unet=unet, scheduler=scheduler,
            text_encoder=_text_encoder("clip-l", size),
            text_encoder_2=_text_encoder("openclip-bigg", size, with_projection=True),
            tokenizer=build_clip_tokenizer(vocab_dir / "1", pad_token="<|endoftext|>"),
            tokenizer_2=build_clip_tokenizer(vocab_dir / "2", pad_token="!"),
            force_zeros_for_empty_prompt=True,
        )
    else:
        encoder = "clip-l" if kind == "sd15" else "openclip-h"
        pipe = StableDiffusionPipeline(
            vae=vae, unet=unet, scheduler=scheduler, text_encoder=_text_encoder(encoder, size),
            tokenizer=build_clip_tokenizer(vocab_dir, pad_token=_TEXT_ENCODERS[encoder][6]),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_random_sd(kind: str, folder: str | Path, size: str = "small", seed: int = 0) -> Path:
    """Write a random-weights pipeline as a diffusers model folder (safetensors), loadable
    with ``--model FOLDER`` like a real checkpoint."""
    folder = Path(folder)
    pipe = build_random_sd(kind, size, seed)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder
