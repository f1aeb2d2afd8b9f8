"""How well a tiny-world UNet knows its training images at each noise level.

For the first 24 memorized and 24 general training images, noise the VAE latent to
timestep t, ask the UNet for the clean latent with the image's own caption (and with
classifier-free guidance at ``--guidance``), and print the mean relative error
``||x0_pred - x0|| / ||x0||``. A model that has memorized a photo predicts it even from pure
noise (t = 999); an error above 1 there is worse than predicting zero. This is the
measurement behind the tiny world's switch to v-prediction (README, "The tiny world").

    .venv/bin/python benchmarks/x0_error.py                      # the shipped world
    .venv/bin/python benchmarks/x0_error.py --model path/to/pipeline --guidance 3
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from memorybench.model.trajectory import clean_estimate
from memorybench.model.pipeline import PipelineAdapter
from memorybench.tinyworld import load_world_data, world_path

TIMESTEPS = (20, 100, 300, 600, 850, 950, 999)


@torch.no_grad()
def predicted_clean(pipe: PipelineAdapter, x_t, t: int, text, scheduler):
    out = pipe.unet(x_t, t, encoder_hidden_states=text).sample
    return clean_estimate(x_t, pipe.to_epsilon(out, x_t, t, scheduler), scheduler.alphas_cumprod[t])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="pipeline folder (default: the shipped tiny world)")
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    pipe = PipelineAdapter.from_folder(args.model or world_path() / "pipeline", model_id="x0-error")
    scheduler = pipe.make_scheduler("ddim")
    data = load_world_data()
    kinds = np.asarray(data.train_kind)
    scale = float(getattr(pipe.vae.config, "scaling_factor", 1.0))
    g = torch.Generator().manual_seed(args.seed)
    print(f"prediction_type {pipe.prediction_type}; relative error ||x0_pred - x0|| / ||x0||, mean of 24 images")
    print(f"{'set':8s} {'t':>4s}  {'caption':>8s}  {'cfg ' + str(args.guidance):>8s}")
    for kind in ("memorized", "general"):
        idx = np.where(kinds == kind)[0][:24]
        images = torch.as_tensor(data.train_images[idx]).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            x0 = pipe.vae.encode(images.to(pipe.device, pipe.dtype)).latent_dist.mean * scale
            cond = pipe.encode_prompts([data.train_captions[i] for i in idx])
            uncond = pipe.encode_prompts([""] * len(idx))
        for t in TIMESTEPS:
            a = scheduler.alphas_cumprod[t]
            noise = torch.randn(x0.shape, generator=g).to(x0)
            x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
            c = predicted_clean(pipe, x_t, t, cond, scheduler)
            u = predicted_clean(pipe, x_t, t, uncond, scheduler)
            guided = u + args.guidance * (c - u)  # CFG is affine, so it acts on x0 estimates alike
            err = [((e - x0).flatten(1).norm(dim=1) / x0.flatten(1).norm(dim=1)).mean().item() for e in (c, guided)]
            print(f"{kind:8s} {t:4d}  {err[0]:8.3f}  {err[1]:8.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
