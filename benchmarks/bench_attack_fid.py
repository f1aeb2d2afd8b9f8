"""Attack and FID benchmarks (ratios and throughputs, not timed tests).

(a) Tiled L2 all pairs vs a per-pair loop: see ``bench_metrics.py`` (not repeated here).
(b) The whole clique attack on one prompt (distances + graph + bounded clique search) at
    N = 50 (chavhan2024) and N = 500 (carlini2023), 64x64: planted clique of 12 among noise.
(c) FID feature extraction through torch-fidelity with the tiny-CLIP extractor, images/s
    at batch 64 (the shipped tiny CLIP when the world is there, else the same architecture
    with random weights: identical cost), and one end-to-end ``fid_kid`` of 96 generated
    vs 512 reference images (the tinyworld-v1 sizes), reference statistics not cached.

Timings are the best of ``--repeats`` runs (the machine may be shared).

Run: ``.venv/bin/python benchmarks/bench_attack_fid.py [--quick]``
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_metrics import _best  # noqa: E402

from memorybench.metrics.extraction import CHAVHAN2024, CARLINI2023, attack_prompt  # noqa: E402
from memorybench.metrics.fid import extract_features, fid_kid, tinyclip_extractor  # noqa: E402
from memorybench.metrics.sscd import available_cores  # noqa: E402


def bench_attack(n: int, preset, repeats: int) -> dict:
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    imgs[:12] = imgs[0]  # a planted clique of 12
    r = attack_prompt(imgs, preset, preset.threshold, preset.verify_l2, source_image=imgs[0])
    assert r.flagged and r.verified
    return {"n": n, "preset": preset.name, "seconds": _best(lambda: attack_prompt(
        imgs, preset, preset.threshold, preset.verify_l2, source_image=imgs[0]), repeats)}


def _extractor():
    try:
        return tinyclip_extractor(), "shipped tiny CLIP"
    except Exception:
        from memorybench.tinyworld.clip import build_tiny_clip

        torch.manual_seed(0)
        return tinyclip_extractor(model=build_tiny_clip(vocab_size=512, context_length=16).eval()), \
            "tiny-CLIP architecture, random weights (world not trained yet)"


def bench_fid(n: int, repeats: int) -> dict:
    ext, which = _extractor()
    rng = np.random.default_rng(2)
    imgs = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    t = _best(lambda: extract_features(imgs, ext, batch_size=64), repeats)
    gen, ref = imgs[:96], rng.integers(0, 256, (512, 64, 64, 3), dtype=np.uint8)
    t_e2e = _best(lambda: fid_kid(gen, ref, ext, kid_subset_size=96), max(1, repeats - 1))
    return {"n": n, "ips": n / t, "which": which, "e2e_s": t_e2e}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    repeats = args.repeats or (2 if args.quick else 3)
    torch.set_num_threads(available_cores())
    print(f"# memorybench attack/FID benchmarks: {platform.processor() or platform.machine()}, "
          f"{available_cores()} cores, torch {torch.__version__}, best of {repeats}")

    print("\n(b) clique attack, one prompt, 64x64 (distances + networkx graph + bounded search + verification)")
    print("| preset | N | seconds per prompt |")
    print("|---|---|---|")
    for n, preset in ((50, CHAVHAN2024), (200 if args.quick else 500, CARLINI2023)):
        r = bench_attack(n, preset, repeats)
        print(f"| {r['preset']} | {r['n']} | {r['seconds']:.3f} |")

    r = bench_fid(256 if args.quick else 1024, repeats)
    print(f"\n(c) FID features through torch-fidelity, tiny-CLIP extractor ({r['which']}), 64x64, batch 64")
    print("| images | images/s | fid_kid end to end, 96 gen vs 512 ref, no cache (s) |")
    print("|---|---|---|")
    print(f"| {r['n']} | {r['ips']:.0f} | {r['e2e_s']:.2f} |")


if __name__ == "__main__":
    main()
