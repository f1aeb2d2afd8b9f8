"""The tiny world's own small CLIP (open_clip), for CLIP score and as an FID feature extractor.

Built in code with ``open_clip.CLIP(embed_dim, vision_cfg, text_cfg)`` (nothing downloaded):
a ViT over 64x64 images (patch 8) and a text transformer over the tiny world's word-level
vocabulary (the same tokenizer as the diffusion model, pooled at the first EOS token).
Trained contrastively on the tiny world's pairs by :func:`train_tiny_clip`; saved as
``model.safetensors`` (fp16) + ``config.json`` + ``tokenizer/``.

``load_tiny_clip(path) -> (model, tokenize_fn, preprocess_info)``: ``tokenize_fn(list[str])``
gives a LongTensor; images go in as uint8 (N, 64, 64, 3) through :func:`preprocess_uint8`
(or by hand with ``preprocess_info``'s mean/std).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from memorybench.core.io import atomic_write_bytes

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)

DEFAULT_CLIP_CFG: dict[str, Any] = {
    "embed_dim": 128,
    "vision": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 3, "head_width": 32, "mlp_ratio": 4.0},
    "text": {"width": 128, "heads": 4, "layers": 2, "mlp_ratio": 4.0},
}


def build_tiny_clip(vocab_size: int, context_length: int, cfg: dict | None = None):
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    cfg = cfg or DEFAULT_CLIP_CFG
    v = cfg["vision"]
    t = cfg["text"]
    vision_cfg = CLIPVisionCfg(
        layers=v["layers"], width=v["width"], head_width=v["head_width"], mlp_ratio=v["mlp_ratio"],
        patch_size=v["patch_size"], image_size=v["image_size"],
    )
    text_cfg = CLIPTextCfg(
        context_length=context_length, vocab_size=vocab_size, width=t["width"], heads=t["heads"],
        layers=t["layers"], mlp_ratio=t["mlp_ratio"], pad_id=1, eos_id=1, pool_type="eos",
    )
    return open_clip.CLIP(cfg["embed_dim"], vision_cfg, text_cfg, quick_gelu=True)


def preprocess_uint8(images: np.ndarray, device: Any = "cpu"):
    """uint8 (N, 64, 64, 3) -> normalised float (N, 3, 64, 64)."""
    import torch

    x = torch.as_tensor(np.ascontiguousarray(images), device=device).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


def _make_tokenize(tokenizer) -> Callable[[list[str]], Any]:
    from memorybench.tinyworld.model import tokenize

    def tokenize_fn(texts: list[str]):
        if isinstance(texts, str):
            texts = [texts]
        return tokenize(tokenizer, list(texts))

    return tokenize_fn


def save_tiny_clip(model, tokenizer, cfg: dict, folder: Path) -> None:
    import torch
    from safetensors.torch import save

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().to(torch.float16).contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write_bytes(folder / "model.safetensors", save(sd))
    full = dict(cfg)
    full["vocab_size"] = len(tokenizer)
    full["context_length"] = tokenizer.model_max_length
    full["mean"] = list(MEAN)
    full["std"] = list(STD)
    (folder / "config.json").write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    tokenizer.save_pretrained(folder / "tokenizer")


def load_tiny_clip(path: str | os.PathLike | None = None, device: Any = "cpu"):
    """Load the tiny CLIP: returns ``(model, tokenize_fn, preprocess_info)``.

    ``path`` is the ``clip/`` folder (default: the shipped world's). ``preprocess_info`` holds
    ``image_size``, ``mean``, ``std`` and ``preprocess`` (uint8 NHWC numpy -> model input).
    """
    from safetensors.torch import load_file
    from transformers import PreTrainedTokenizerFast

    if path is None:
        from memorybench.tinyworld import world_path

        path = world_path() / "clip"
    folder = Path(path)
    if not (folder / "config.json").exists():
        from memorybench.errors import ModelError

        raise ModelError(f"no tiny CLIP at {folder} (expected config.json and model.safetensors)")
    cfg = json.loads((folder / "config.json").read_text())
    model = build_tiny_clip(cfg["vocab_size"], cfg["context_length"], cfg)
    sd = load_file(str(folder / "model.safetensors"))
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    model.eval().to(device)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder / "tokenizer"))
    info = {
        "image_size": cfg["vision"]["image_size"],
        "mean": cfg["mean"],
        "std": cfg["std"],
        "input": "uint8 (N, 64, 64, 3)",
        "preprocess": lambda imgs: preprocess_uint8(imgs, device),
    }
    return model, _make_tokenize(tokenizer), info


def clip_scores(model, tokenize_fn, images: np.ndarray, prompts: list[str], batch: int = 256) -> np.ndarray:
    """Cosine similarity between each image and its prompt (the tiny world's CLIP score)."""
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            im = model.encode_image(preprocess_uint8(images[i : i + batch], device), normalize=True)
            tx = model.encode_text(tokenize_fn(prompts[i : i + batch]).to(device), normalize=True)
            out.append((im * tx).sum(-1).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def train_tiny_clip(
    images: np.ndarray,
    captions: list[str],
    tokenizer,
    steps: int,
    batch: int,
    lr: float,
    seed: int = 0,
    device: Any = "cpu",
    cfg: dict | None = None,
    log: Callable[[dict], None] | None = None,
    progress: bool = False,
):
    """Contrastive training on unique (image, caption) pairs; returns the model (eval mode)."""
    import torch
    import torch.nn.functional as F

    cfg = cfg or DEFAULT_CLIP_CFG
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_tiny_clip(len(tokenizer), tokenizer.model_max_length, cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 2), pct_start=0.1)
    from memorybench.tinyworld.model import tokenize

    all_tok = tokenize(tokenizer, captions)
    imgs = torch.as_tensor(images)
    n = len(captions)
    caps = np.asarray(captions)
    it = range(steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="tiny CLIP", leave=False)
    model.train()
    for step in it:
        idx = torch.randint(0, n, (min(batch, n),), generator=g)
        x = imgs[idx].numpy()
        # light augmentation: random shifts by up to 4 px
        x = preprocess_uint8(x, device)
        if True:
            dx, dy = torch.randint(-4, 5, (2,), generator=g).tolist()
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        tok = all_tok[idx].to(device)
        # several images can share a caption: treat them all as positives
        c = caps[idx.numpy()]
        same = torch.as_tensor(c[:, None] == c[None, :], device=device).float()
        target = same / same.sum(1, keepdim=True)
        im = model.encode_image(x, normalize=True)
        tx = model.encode_text(tok, normalize=True)
        logits = model.logit_scale.exp().clamp(max=100) * im @ tx.t()
        loss = 0.5 * (-(target * F.log_softmax(logits, 1)).sum(1).mean() - (target * F.log_softmax(logits.t(), 1)).sum(1).mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if log is not None and (step % 50 == 0 or step == steps - 1):
            log({"phase": "clip", "step": step, "loss": float(loss.detach())})
    model.eval()
    return model
