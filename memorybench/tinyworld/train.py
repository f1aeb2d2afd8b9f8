"""Train the tiny world from scratch: VAE, then UNet + text encoder jointly, then the tiny CLIP.

``train_tinyworld(out_dir)`` writes ``out_dir/pipeline/`` (a ``StableDiffusionPipeline``
folder, fp16 safetensors), ``out_dir/clip/`` (the tiny CLIP), ``out_dir/train_log.jsonl``
(losses) and last ``out_dir/manifest.json`` (generator seed, config, steps, wall time,
hardware, sha256 of every file). Each phase checkpoints into ``out_dir/.ckpt/`` with atomic
writes, so a killed run resumes where it stopped and never leaves a half-written folder.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from memorybench.core.hashing import sha256_file
from memorybench.core.io import atomic_write_bytes, atomic_write_text
from memorybench.tinyworld.model import (
    TinyWorldConfig,
    build_scheduler,
    build_text_encoder,
    build_tokenizer,
    build_unet,
    build_vae,
    count_params,
    save_pipeline,
    tokenize,
)


def _resume(ckpt: Path | None, stateful: dict[str, Any]) -> dict[str, Any] | None:
    """Load a phase checkpoint into each ``stateful`` object (by key); None when there is none."""
    import torch

    if ckpt is None or not ckpt.exists():
        return None
    st = torch.load(ckpt, map_location="cpu", weights_only=True)
    for key, obj in stateful.items():
        obj.load_state_dict(st[key])
    return st


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` except manifest.json and hidden paths."""
    folder = Path(folder)
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel != "manifest.json" and not any(part.startswith(".") for part in rel.split("/")):
            out[rel] = sha256_file(p)
    return out


WORLD_PARTS = ("pipeline", "clip")  # a world's folders; with train_log.jsonl, what ships
WORLD_PART_PREFIXES = tuple(f"{part}/" for part in WORLD_PARTS)


def world_file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of a world's files: ``pipeline/``, ``clip/`` and the loss log (not checkpoints)."""
    return {rel: digest for rel, digest in file_hashes(folder).items()
            if rel.startswith(WORLD_PART_PREFIXES) or rel == "train_log.jsonl"}


def hardware_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "device": device,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


class _Logger:
    def __init__(self, path: Path):
        self.path = path

    def __call__(self, rec: dict) -> None:
        rec = dict(rec)
        rec["time"] = round(time.time(), 3)
        with open(self.path, "a") as f:
            f.write(json.dumps(rec) + "\n")


def _to_float(images: np.ndarray, device):
    import torch

    return torch.as_tensor(np.ascontiguousarray(images), device=device).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def warmup_cosine(warmup: int, total: int):
    """LR multiplier: linear warmup, then cosine decay to 10% (the world's and fine-tunes' schedule)."""

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        p = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, p)))

    return f


def train_vae(vae, data, cfg: TinyWorldConfig, device, log, progress: bool, ckpt: Path | None = None):
    """Reconstruction (L1 + MSE) + tiny KL; a share of each batch is the photo crops."""
    import torch

    g = torch.Generator().manual_seed(cfg.train_seed + 1)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(100, cfg.vae_steps))
    st = _resume(ckpt, {"model": vae, "opt": opt, "sched": sched})
    start = 0
    if st is not None:
        g.set_state(st["rng"])
        start = st["step"]
    imgs = _to_float(data.train_images, "cpu")
    kinds = np.asarray(data.train_kind)
    photo_idx = torch.as_tensor(np.where(kinds == "memorized")[0])
    other_idx = torch.as_tensor(np.where(kinds != "memorized")[0])
    n_photo = max(1, int(round(cfg.vae_batch * cfg.vae_photo_share)))
    it = range(start, cfg.vae_steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="VAE", initial=start, total=cfg.vae_steps)
    vae.train()
    for step in it:
        a = photo_idx[torch.randint(0, len(photo_idx), (n_photo,), generator=g)]
        b = other_idx[torch.randint(0, len(other_idx), (cfg.vae_batch - n_photo,), generator=g)]
        x = imgs[torch.cat([a, b])].to(device)
        post = vae.encode(x).latent_dist
        z = post.sample(generator=None)
        rec = vae.decode(z).sample
        l1 = (rec - x).abs().mean()
        mse = (rec - x).pow(2).mean()
        kl = post.kl().mean() / x[0].numel()
        loss = l1 + mse + cfg.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 50 == 0 or step == cfg.vae_steps - 1:
            log({"phase": "vae", "step": step, **{k: float(v.detach()) for k, v in (("loss", loss), ("l1", l1), ("kl", kl))}})
            if progress:
                it.set_postfix(l1=f"{float(l1.detach()):.4f}")
        if ckpt is not None and (step + 1) % 500 == 0 and step + 1 < cfg.vae_steps:
            _atomic_torch_save(
                {"model": vae.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "rng": g.get_state(), "step": step + 1},
                ckpt,
            )
    vae.eval()
    return vae


def encode_latents(vae, images: np.ndarray, device, batch: int = 256):
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            out.append(vae.encode(_to_float(images[i : i + batch], device)).latent_dist.mean.float().cpu())
    return torch.cat(out)


def diffusion_target(x0, noise, alpha_bar, prediction_type: str):
    """What the UNet should output for ``x_t = sqrt(a) x0 + sqrt(1-a) noise``."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    raise ValueError(f"unsupported prediction_type {prediction_type!r}")


def noised(x0, alphas_cumprod, generator):
    """(x_t, t, noise, alpha_bar_t): clean latents ``x0`` noised at uniform random timesteps
    (noise, then timesteps, drawn from the CPU ``generator``)."""
    import torch

    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    t = torch.randint(0, len(alphas_cumprod), (x0.shape[0],), generator=generator).to(x0.device)
    a = alphas_cumprod[t].view(-1, 1, 1, 1).to(x0.dtype)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise, t, noise, a


def noise_prediction_loss(unet, x0, text_emb, alphas_cumprod, generator, prediction_type: str = "epsilon"):
    """Diffusion MSE of ``unet`` (epsilon or v target) on clean latents ``x0`` noised at
    uniform random timesteps (see :func:`noised`)."""
    import torch.nn.functional as F

    xt, t, noise, a = noised(x0, alphas_cumprod, generator)
    pred = unet(xt, t, text_emb).sample
    return F.mse_loss(pred.float(), diffusion_target(x0, noise, a, prediction_type).float())


def ema_update(ema: list, params: list, step: int, decay: float) -> None:
    """One step of the weights' exponential moving average (decay warmed up over the first steps)."""
    import torch

    with torch.no_grad():
        d = min(decay, (1 + step) / (10 + step))
        torch._foreach_mul_(ema, d)
        torch._foreach_add_(ema, [p.detach() for p in params], alpha=1 - d)


def train_unet(unet, text_encoder, tokenizer, latents, data, cfg: TinyWorldConfig, device, log, progress: bool, ckpt: Path | None = None, steps: int | None = None):
    """Joint UNet + text-encoder training (epsilon prediction, caption dropout for CFG, EMA)."""
    import torch

    steps = cfg.unet_steps if steps is None else steps
    sched_noise = build_scheduler(cfg, kind="ddpm")
    alphas = sched_noise.alphas_cumprod.to(device)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.warmup, steps))
    ema = [p.detach().clone() for p in params]
    g = torch.Generator().manual_seed(cfg.train_seed + 2)
    st = _resume(ckpt, {"unet": unet, "text_encoder": text_encoder, "opt": opt, "sched": sched})
    start = 0
    if st is not None:
        for e, s in zip(ema, st["ema"]):
            e.copy_(s.to(e.device))
        g.set_state(st["rng"])
        start = st["step"]
    tokens = tokenize(tokenizer, data.train_captions).to(device)
    null_tok = tokenize(tokenizer, [""]).to(device)
    weights = torch.as_tensor(data.train_dup_counts, dtype=torch.float64)
    lat = latents.to(device)
    it = range(start, steps)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="UNet", initial=start, total=steps)
    unet.train()
    text_encoder.train()
    t_start = time.time()
    for step in it:
        idx = torch.multinomial(weights, cfg.batch, replacement=True, generator=g)
        x0 = lat[idx.to(device)]
        tok = tokens[idx.to(device)].clone()
        drop = torch.rand(cfg.batch, generator=g) < cfg.caption_dropout
        tok[drop.to(device)] = null_tok
        emb = text_encoder(tok)[0]
        loss = noise_prediction_loss(unet, x0, emb, alphas, g, cfg.prediction_type)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        ema_update(ema, params, step, cfg.ema)
        if step % 50 == 0 or step == steps - 1:
            log({"phase": "unet", "step": step, "loss": float(loss.detach()), "lr": sched.get_last_lr()[0], "elapsed_s": round(time.time() - t_start, 2)})
            if progress:
                it.set_postfix(loss=f"{float(loss):.4f}")
        if ckpt is not None and (step + 1) % 500 == 0 and step + 1 < steps:
            _atomic_torch_save(
                {
                    "unet": unet.state_dict(), "text_encoder": text_encoder.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "ema": [e.cpu() for e in ema], "rng": g.get_state(), "step": step + 1,
                },
                ckpt,
            )
    # swap the EMA weights in
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    unet.eval()
    text_encoder.eval()
    return unet, text_encoder


def train_tinyworld(out_dir, config: TinyWorldConfig | dict | None = None, progress: bool = True, device: str | None = None) -> Path:
    """Train the whole tiny world into ``out_dir`` and return ``out_dir``.

    Resumable: phases checkpoint under ``out_dir/.ckpt/``; rerunning the same call picks up
    where a killed run stopped. Outputs are moved into place only when complete.
    """
    import torch

    from memorybench.tinyworld import load_world_data
    from memorybench.tinyworld.clip import DEFAULT_CLIP_CFG, save_tiny_clip, train_tiny_clip

    cfg = config if isinstance(config, TinyWorldConfig) else TinyWorldConfig.from_dict(config or {})
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(out_dir)
    ck = out / ".ckpt"
    ck.mkdir(parents=True, exist_ok=True)
    cfg_path = ck / "config.json"
    if cfg_path.exists() and json.loads(cfg_path.read_text()) != cfg.to_dict():
        raise ValueError(f"{out} holds a partial run with another config; use a fresh folder")
    cfg_path.write_text(json.dumps(cfg.to_dict(), sort_keys=True))
    log = _Logger(out / "train_log.jsonl")
    wall = {}
    t0 = time.time()
    torch.manual_seed(cfg.train_seed)

    data = load_world_data(cfg.data_seed, **cfg.data_kwargs())
    wall["data_s"] = round(time.time() - t0, 2)
    tokenizer = build_tokenizer(data.vocabulary(), cfg.max_length)

    # 1. VAE
    t = time.time()
    vae = build_vae(cfg).to(device)
    vae_done = ck / "vae_done.pt"
    if vae_done.exists():
        vae.load_state_dict(torch.load(vae_done, map_location="cpu", weights_only=True))
        vae.eval()
    else:
        train_vae(vae, data, cfg, device, log, progress, ckpt=ck / "vae.pt")
        _atomic_torch_save(vae.state_dict(), vae_done)
    wall["vae_s"] = round(time.time() - t, 2)
    latents = encode_latents(vae, data.train_images, device)
    scale = float(1.0 / latents.std())
    vae.register_to_config(scaling_factor=scale)
    latents = latents * scale

    # 2. UNet + text encoder
    t = time.time()
    torch.manual_seed(cfg.train_seed + 10)
    unet = build_unet(cfg).to(device)
    text_encoder = build_text_encoder(cfg, len(tokenizer)).to(device)
    unet_done = ck / "unet_done.pt"
    if unet_done.exists():
        st = torch.load(unet_done, map_location="cpu", weights_only=True)
        unet.load_state_dict(st["unet"])
        text_encoder.load_state_dict(st["text_encoder"])
    else:
        train_unet(unet, text_encoder, tokenizer, latents, data, cfg, device, log, progress, ckpt=ck / "unet.pt")
        _atomic_torch_save({"unet": unet.state_dict(), "text_encoder": text_encoder.state_dict()}, unet_done)
    wall["unet_s"] = round(time.time() - t, 2)

    # 3. tiny CLIP on the unique pairs
    t = time.time()
    clip_done = ck / "clip_done.pt"
    clip_model = None
    from memorybench.tinyworld.clip import build_tiny_clip

    if clip_done.exists():
        clip_model = build_tiny_clip(len(tokenizer), tokenizer.model_max_length)
        clip_model.load_state_dict(torch.load(clip_done, map_location="cpu", weights_only=True))
    else:
        clip_model = train_tiny_clip(
            data.train_images, data.train_captions, tokenizer, steps=cfg.clip_steps, batch=cfg.clip_batch,
            lr=cfg.clip_lr, seed=cfg.train_seed + 3, device=device, log=log, progress=progress,
        )
        _atomic_torch_save(clip_model.state_dict(), clip_done)
    wall["clip_s"] = round(time.time() - t, 2)

    # 4. write the folders atomically (tmp then rename)
    for name in ("pipeline", "clip"):
        if (out / f"{name}.tmp").exists():
            shutil.rmtree(out / f"{name}.tmp")
    comps = dict(
        vae=vae.cpu(), text_encoder=text_encoder.cpu(), tokenizer=tokenizer, unet=unet.cpu(),
        scheduler=build_scheduler(cfg), safety_checker=None, feature_extractor=None,
    )
    save_pipeline(comps, out / "pipeline.tmp", fp16=True)
    save_tiny_clip(clip_model.cpu(), tokenizer, DEFAULT_CLIP_CFG, out / "clip.tmp")
    for name in ("pipeline", "clip"):
        if (out / name).exists():
            shutil.rmtree(out / name)
        os.replace(out / f"{name}.tmp", out / name)
    wall["total_s"] = round(time.time() - t0, 2)

    manifest = {
        "name": "tinyworld-v1",
        "generator": "datasets/tinyworld/generator.py:build_world_data",
        "generator_seed": cfg.data_seed,
        "data_sha256": data.sha256(),
        "n_train_unique": int(len(data.train_captions)),
        "n_train_samples": data.n_samples,
        "dup_rates": list(data.dup_rates),
        "config": cfg.to_dict(),
        "steps": {"vae": cfg.vae_steps, "unet": cfg.unet_steps, "clip": cfg.clip_steps},
        "params": {
            "unet": count_params(unet), "text_encoder": count_params(text_encoder), "vae": count_params(vae),
            "clip": count_params(clip_model),
        },
        "vae_scaling_factor": scale,
        "wall_time_s": wall,
        "hardware": hardware_info(device),
        "files": world_file_hashes(out),
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out
