"""Which resize should the default SSCD protocol use? A measurement on real photos.

The tiny world's images are 64x64; Stable Diffusion's are 512x512. The ONNX SSCD model
accepts any size, so the default protocol must pick one. This script takes the photos
that ship inside scikit-image's wheel, cuts 5 square crops from each (4 quadrants + centre),
resizes them to 64x64 and measures, for each candidate resize and interpolation:

* distinct: SSCD between crops of *different* photos (the floor a copy must clear):
  mean, p99, max;
* copies: SSCD between a crop and an imperfect reproduction of it (blur, noise, JPEG,
  colour jitter, a 3 px shift, a 32 px round trip, a mix): mean, p5, min per kind;
* separation: AUROC(copies vs distinct) and margin = copies p5 - distinct p99;
* throughput (images/s on this machine).

With ``--sd`` it also checks the chosen sizes on 512x512 images (crops resized to 512).

Run: ``.venv/bin/python benchmarks/sscd_resize_study.py [--sizes 64,128,288] [--sd]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import time

import numpy as np
import torch
from PIL import Image, ImageFilter

from memorybench.metrics.sscd import PRESETS, SSCDEmbedder, with_resize
from memorybench.metrics.stats import auroc

PHOTOS = [
    "astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
    "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "camera.png", "coins.png", "moon.png",
    "page.png", "text.png", "clock_motion.png", "brick.png", "grass.png", "gravel.png",
    "color.png", "logo.png", "cell.png", "microaneurysms.png",
]


def load_photos() -> list[np.ndarray]:
    import skimage.data

    root = os.path.dirname(skimage.data.__file__)
    out = []
    for name in PHOTOS:
        path = os.path.join(root, name)
        if not os.path.exists(path):
            continue
        im = Image.open(path).convert("RGB")
        out.append(np.asarray(im))
    return out


def crops(photos: list[np.ndarray], size: int, full: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """5 square crops per photo (4 quadrants + centre), or with ``full`` one centre square
    crop of the whole photo, each resized to ``size`` (Lanczos)."""
    ims, src = [], []
    for k, p in enumerate(photos):
        h, w = p.shape[:2]
        if full:
            s = min(h, w)
            boxes = [((h - s) // 2, (w - s) // 2)]
        else:
            s = min(h, w) // 2
            boxes = [(0, 0), (0, w - s), (h - s, 0), (h - s, w - s), ((h - s) // 2, (w - s) // 2)]
        for top, left in boxes:
            c = Image.fromarray(p[top : top + s, left : left + s])
            ims.append(np.asarray(c.resize((size, size), Image.LANCZOS)))
            src.append(k)
    return np.stack(ims), np.array(src)


def _pil(x: np.ndarray) -> Image.Image:
    return Image.fromarray(x)


def copy_variants(x: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Imperfect reproductions of one image, scaled to its size."""
    n = x.shape[0]
    sc = n / 64.0
    out: dict[str, np.ndarray] = {}
    out["blur0.7"] = np.asarray(_pil(x).filter(ImageFilter.GaussianBlur(0.7 * sc)))
    out["blur1.2"] = np.asarray(_pil(x).filter(ImageFilter.GaussianBlur(1.2 * sc)))
    out["noise8"] = np.clip(x + rng.normal(0, 8, x.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    _pil(x).save(buf, format="JPEG", quality=40)
    out["jpeg40"] = np.asarray(Image.open(buf).convert("RGB"))
    xf = x.astype(np.float32)
    jit = (xf - xf.mean()) * 1.2 + xf.mean() * 1.1 + np.array([8, -5, 3])
    out["colour"] = np.clip(jit, 0, 255).astype(np.uint8)
    s = max(1, int(round(3 * sc)))
    out["shift3"] = np.pad(x, ((s, 0), (s, 0), (0, 0)), mode="edge")[:n, :n]
    half = _pil(x).resize((n // 2, n // 2), Image.BILINEAR).resize((n, n), Image.BILINEAR)
    out["roundtrip32"] = np.asarray(half)
    mix = np.asarray(_pil(x).filter(ImageFilter.GaussianBlur(0.7 * sc))).astype(np.float32)
    mix = np.pad(mix, ((2, 0), (2, 0), (0, 0)), mode="edge")[:n, :n] + rng.normal(0, 5, x.shape)
    out["mix"] = np.clip(mix, 0, 255).astype(np.uint8)
    return out


def study(images: np.ndarray, src: np.ndarray, protocols, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    variants = [copy_variants(im, rng) for im in images]
    kinds = list(variants[0])
    copies = np.stack([v[k] for k in kinds for v in variants])  # kind-major
    rows = []
    for proto in protocols:
        emb = SSCDEmbedder(proto, batch_size=64)
        t = time.perf_counter()
        e0 = emb.embed(images)
        ec = emb.embed(copies)
        ips = (len(images) + len(copies)) / (time.perf_counter() - t)
        sim = e0 @ e0.T
        diff = src[:, None] != src[None, :]
        iu = np.triu_indices(len(images), 1)
        distinct = sim[iu][diff[iu]]
        same_photo = sim[iu][~diff[iu]]
        ec = ec.reshape(len(kinds), len(images), -1)
        copy_sims = np.einsum("knd,nd->kn", ec, e0)
        allc = copy_sims.ravel()
        row = {
            "resize": proto.resize, "interp": proto.interpolation, "img_per_s": round(ips, 1),
            "distinct_mean": float(distinct.mean()), "distinct_p99": float(np.quantile(distinct, 0.99)),
            "distinct_max": float(distinct.max()), "same_photo_mean": float(same_photo.mean()),
            "copy_mean": float(allc.mean()), "copy_p5": float(np.quantile(allc, 0.05)),
            "copy_min": float(allc.min()),
            "auroc": float(auroc(allc, distinct)),
            "margin": float(np.quantile(allc, 0.05) - np.quantile(distinct, 0.99)),
            "per_kind_mean": {k: float(copy_sims[i].mean()) for i, k in enumerate(kinds)},
            "per_kind_min": {k: float(copy_sims[i].min()) for i, k in enumerate(kinds)},
        }
        rows.append(row)
        print(
            f"R={str(proto.resize):>6} {proto.interpolation:8s} distinct mean {row['distinct_mean']:.3f} "
            f"p99 {row['distinct_p99']:.3f} max {row['distinct_max']:.3f} | copies mean "
            f"{row['copy_mean']:.3f} p5 {row['copy_p5']:.3f} min {row['copy_min']:.3f} | AUROC "
            f"{row['auroc']:.4f} margin {row['margin']:+.3f} | {ips:.0f} img/s",
            flush=True,
        )
        print("    per-kind mean: " + " ".join(f"{k}={v:.2f}" for k, v in row["per_kind_mean"].items()), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="native,96,128,160,224,256,288,320")
    ap.add_argument("--interps", default="bilinear,bicubic")
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--full", action="store_true", help="one whole-photo crop per photo (use with --image-size 512)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    photos = load_photos()
    images, src = crops(photos, args.image_size, args.full)
    print(f"{len(photos)} photos, {len(images)} crops of {args.image_size}px")
    protos = []
    for interp in args.interps.split(","):
        for s in args.sizes.split(","):
            r = None if s == "native" else int(s)
            protos.append(with_resize(PRESETS["default"], r, interp))
    rows = study(images, src, protos)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"image_size": args.image_size, "n_crops": len(images), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
