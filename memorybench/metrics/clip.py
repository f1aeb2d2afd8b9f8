"""CLIP score: cosine similarity between an image and its caption in a CLIP model's space.

``ClipScorer`` wraps any open_clip-like model (``encode_image``, ``encode_text``) and a
tokenizer function. The score of a pair is the *raw cosine* of the L2-normalised image and
text embeddings, in [-1, 1] -- not multiplied by 100 (torchmetrics' ``CLIPScore``) nor by
2.5 and clipped at 0 (Hessel et al.'s CLIPScore). Multiply by 100 to compare with papers
that report ``100 * cos`` (they also clip negatives to 0, which rarely matters).

Image preprocessing follows open_clip's eval transform: shorter side resized to
``image_size`` (antialiased bicubic), centre crop ``image_size x image_size``, pixels to
[0, 1], then ``(x - mean) / std``.

``load_openclip_scorer(arch, weights_path)`` builds one from a *local* open_clip weights
file (e.g. ViT-H-14 or ViT-g-14 laion2b); nothing is downloaded, and a missing file is a
:class:`~memorybench.errors.ModelError`. The tiny world passes its own small CLIP model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from memorybench.errors import ConfigError, ModelError
from memorybench.core.hashing import sha256_file

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class ClipScorer:
    """Per-pair CLIP cosine between images (uint8 NHWC) and captions."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenize_fn: Callable[[list[str]], torch.Tensor],
        image_size: int | tuple[int, int],
        mean: Sequence[float] = OPENAI_CLIP_MEAN,
        std: Sequence[float] = OPENAI_CLIP_STD,
        device: str | torch.device = "cpu",
        batch_size: int = 64,
        name: str | None = None,
        interpolation: str = "bicubic",
    ) -> None:
        if not (hasattr(model, "encode_image") and hasattr(model, "encode_text")):
            raise ConfigError("ClipScorer needs a model with encode_image and encode_text")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.tokenize_fn = tokenize_fn
        if isinstance(image_size, (tuple, list)):
            image_size = int(image_size[0])
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.interpolation = interpolation
        self.implementation = name or f"clip/{type(model).__name__}"

    # -- preprocessing --------------------------------------------------------------------

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {arr.dtype} {arr.shape}")
        x = torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).float().div_(255.0)
        h, w = x.shape[-2:]
        s = self.image_size
        oh, ow = (s, max(s, int(s * w / h))) if h <= w else (max(s, int(s * h / w)), s)
        if (oh, ow) != (h, w):
            x = F.interpolate(x, size=(oh, ow), mode=self.interpolation, align_corners=False, antialias=True)
            x = x.clamp_(0.0, 1.0)
        top, left = int(round((oh - s) / 2.0)), int(round((ow - s) / 2.0))
        x = x[..., top : top + s, left : left + s]
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).contiguous()

    # -- embeddings -----------------------------------------------------------------------

    @torch.inference_mode()
    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """L2-normalised image embeddings, float32 (N, D)."""
        arr = np.asarray(images)
        if arr.ndim == 3:
            arr = arr[None]
        outs = []
        for s in range(0, arr.shape[0], self.batch_size):
            x = self.preprocess(arr[s : s + self.batch_size]).to(self.device)
            dtype = next(self.model.parameters()).dtype
            e = self.model.encode_image(x.to(dtype)).float()
            outs.append(F.normalize(e, dim=-1).cpu())
        return torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)

    @torch.inference_mode()
    def embed_texts(self, captions: Sequence[str]) -> np.ndarray:
        """L2-normalised text embeddings, float32 (N, D)."""
        captions = list(captions)
        outs = []
        for s in range(0, len(captions), self.batch_size):
            tokens = self.tokenize_fn(captions[s : s + self.batch_size])
            if not isinstance(tokens, torch.Tensor):
                tokens = torch.as_tensor(np.asarray(tokens))
            e = self.model.encode_text(tokens.to(self.device)).float()
            outs.append(F.normalize(e, dim=-1).cpu())
        return torch.cat(outs).numpy() if outs else np.zeros((0, 0), np.float32)

    def score(self, images: np.ndarray, captions: Sequence[str]) -> np.ndarray:
        """Cosine similarity of each (image i, caption i) pair, float64 (N,), in [-1, 1]."""
        captions = [captions] if isinstance(captions, str) else list(captions)
        n = 1 if np.asarray(images).ndim == 3 else len(images)
        if n != len(captions):
            raise ValueError(f"{n} images but {len(captions)} captions")
        if n == 0:
            return np.zeros(0, dtype=np.float64)
        ie = self.embed_images(images).astype(np.float64)
        te = self.embed_texts(captions).astype(np.float64)
        return np.clip(np.einsum("nd,nd->n", ie, te), -1.0, 1.0)

    __call__ = score

    def protocol_dict(self) -> dict[str, Any]:
        return {
            "model": self.implementation,
            "image_size": self.image_size,
            "resize": f"shorter side {self.image_size}, center crop, {self.interpolation} antialias",
            "mean": list(self.mean),
            "std": list(self.std),
            "score": "raw cosine of L2-normalised embeddings (not x100, not clipped)",
        }


def load_openclip_scorer(
    arch: str,
    weights_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    precision: str = "fp32",
) -> ClipScorer:
    """A ClipScorer from an open_clip architecture and a LOCAL weights file.

    ``arch``: an open_clip model name, e.g. ``"ViT-H-14"`` or ``"ViT-g-14"``;
    ``weights_path``: the checkpoint file (e.g. ``open_clip_pytorch_model.bin`` of
    ``laion2b_s32b_b79k``). Never downloads: a missing file raises ModelError.
    """
    import open_clip

    path = Path(weights_path)
    if not path.is_file():
        raise ModelError(
            f"CLIP weights for {arch} not found: {path} (give the local open_clip checkpoint "
            "file; memorybench never downloads weights)"
        )
    if arch not in open_clip.list_models():
        raise ConfigError(f"unknown open_clip architecture {arch!r}")
    try:
        model, _, _ = open_clip.create_model_and_transforms(
            arch, pretrained=str(path), device=device, precision=precision
        )
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as e:
        raise ModelError(f"cannot load open_clip {arch} from {path}: {e}") from e
    visual = model.visual
    image_size = getattr(visual, "image_size", 224)
    mean = getattr(visual, "image_mean", None) or OPENAI_CLIP_MEAN
    std = getattr(visual, "image_std", None) or OPENAI_CLIP_STD
    name = f"clip/open_clip=={open_clip.__version__}/{arch}/{path.name}@sha256:{sha256_file(path)[:12]}"
    return ClipScorer(model, tokenizer, image_size, mean, std, device=device, batch_size=batch_size, name=name)


__all__ = ["ClipScorer", "load_openclip_scorer", "OPENAI_CLIP_MEAN", "OPENAI_CLIP_STD"]
