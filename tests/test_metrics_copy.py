"""Copy metrics: tiled L2, retrieval, diversity, statistics, CLIP score and the copy summary."""

from __future__ import annotations

import os

import numpy as np
import open_clip
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from memorybench.errors import ModelError
from memorybench.metrics.base import MetricValue
from memorybench.metrics.clip import ClipScorer, load_openclip_scorer
from memorybench.metrics.copy import (
    calibrate_copy_threshold,
    copy_summary,
    copy_summary_from_embeddings,
    nearest_train_sims,
)
from memorybench.metrics.diversity import diversity_ragged, pairwise_diversity
from memorybench.metrics.retrieval import EmbeddingIndex, nearest
from memorybench.metrics.stats import (
    auroc,
    auroc_with_ci,
    bootstrap_ci,
    mean_with_ci,
    ratio_with_ci,
    tpr_at_fpr,
)
from memorybench.metrics.tiled_l2 import tile_bounds, tiled_l2_paired, tiled_l2_pairwise

FAST = settings(max_examples=25, deadline=None)


# --------------------------------------------------------------------------- tiled L2


def _naive_tiled_l2(x: np.ndarray, y: np.ndarray, grid: int) -> float:
    x = x.astype(np.float64) / (255.0 if x.dtype == np.uint8 else 1.0)
    y = y.astype(np.float64) / (255.0 if y.dtype == np.uint8 else 1.0)
    h, w = x.shape[:2]
    best = 0.0
    for i in range(grid):
        for j in range(grid):
            y0, y1 = i * h // grid, (i + 1) * h // grid
            x0, x1 = j * w // grid, (j + 1) * w // grid
            d = x[y0:y1, x0:x1] - y[y0:y1, x0:x1]
            best = max(best, float(np.sqrt(np.mean(d * d))))
    return best


@FAST
@given(
    n=st.integers(1, 5), m=st.integers(1, 5), h=st.integers(4, 13), w=st.integers(4, 13),
    grid=st.integers(1, 4), seed=st.integers(0, 2**16), chunk=st.integers(1, 4),
)
def test_tiled_l2_vectorised_equals_naive(n, m, h, w, grid, seed, chunk):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (m, h, w, 3), dtype=np.uint8)
    got = tiled_l2_pairwise(a, b, grid=grid, chunk=chunk)
    want = np.array([[_naive_tiled_l2(a[i], b[j], grid) for j in range(m)] for i in range(n)])
    assert got.shape == (n, m)
    np.testing.assert_allclose(got, want, atol=1e-7)
    paired = tiled_l2_paired(a[: min(n, m)], b[: min(n, m)], grid=grid)
    np.testing.assert_allclose(paired, np.diag(want[: min(n, m), : min(n, m)]), atol=1e-9)


def test_tiled_l2_float_input_and_torch_output():
    rng = np.random.default_rng(1)
    a = rng.random((3, 16, 16, 3))
    got = tiled_l2_pairwise(torch.from_numpy(a), grid=4)
    assert isinstance(got, torch.Tensor)
    want = np.array([[_naive_tiled_l2(a[i], a[j], 4) for j in range(3)] for i in range(3)])
    np.testing.assert_allclose(got.numpy(), want, atol=1e-7)
    np.testing.assert_allclose(np.diag(got.numpy()), 0.0, atol=1e-7)


def test_tiled_l2_known_values():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 200, (64, 64, 3), dtype=np.uint8)
    same = tiled_l2_pairwise(np.stack([x, x]))
    assert np.all(same == 0.0)  # exact for uint8
    y = x.copy()
    y[16:32, 32:48] += 51  # one 16x16 tile of the 4x4 grid, +0.2 on the [0, 1] scale
    d = tiled_l2_paired(x[None], y[None])[0]
    assert d == pytest.approx(0.2, abs=1e-12)
    # a max over tiles: the same change spread over the whole image gives the same value
    z = (x.astype(np.int16) + 51).astype(np.uint8)
    assert tiled_l2_paired(x[None], z[None])[0] == pytest.approx(0.2, abs=1e-12)
    # but a plain (untiled) RMS would dilute the one-tile change 16x in energy
    assert tiled_l2_pairwise(x[None], y[None], grid=1)[0, 0] == pytest.approx(0.05, abs=1e-12)


def test_tiled_l2_bounds_and_errors():
    assert tile_bounds(10, 10, 3) == [
        (0, 3, 0, 3), (0, 3, 3, 6), (0, 3, 6, 10), (3, 6, 0, 3), (3, 6, 3, 6), (3, 6, 6, 10),
        (6, 10, 0, 3), (6, 10, 3, 6), (6, 10, 6, 10)]
    with pytest.raises(ValueError):
        tiled_l2_pairwise(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 9, 3), np.uint8))
    with pytest.raises(ValueError):
        tiled_l2_pairwise(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8, 3), np.float32))


def test_tiled_l2_memory_bounded_chunks_agree():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 256, (37, 32, 32, 3), dtype=np.uint8)
    full = tiled_l2_pairwise(a)
    tiny_budget = tiled_l2_pairwise(a, max_bytes=200_000)
    np.testing.assert_allclose(full, tiny_budget, atol=1e-7)
    np.testing.assert_allclose(full, full.T, atol=1e-7)
    ref = np.array([[_naive_tiled_l2(a[i], a[j], 4) for j in range(37)] for i in range(37)])
    np.testing.assert_allclose(full, ref, atol=1e-7)
    # extreme images (all 0 vs all 255) leave the exact float32 range: float64 fallback
    ext = np.stack([np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 255, np.uint8)])
    np.testing.assert_allclose(tiled_l2_pairwise(ext), [[0.0, 1.0], [1.0, 0.0]], atol=1e-12)


# --------------------------------------------------------------------------- retrieval


def _unit(rng, n, d=32):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@FAST
@given(seed=st.integers(0, 2**16), n=st.integers(2, 200), q=st.integers(1, 20))
def test_retrieval_finds_planted_nearest(seed, n, q):
    rng = np.random.default_rng(seed)
    db = _unit(rng, n)
    target = rng.integers(0, n, q)
    query = db[target] + 0.01 * rng.normal(size=(q, db.shape[1])).astype(np.float32)
    sims, idx = nearest(query, db, k=1)
    assert sims.shape == idx.shape == (q, 1)
    np.testing.assert_array_equal(idx[:, 0], target)
    assert np.all(sims[:, 0] > 0.99)


def test_retrieval_topk_matches_brute_force_and_ivf():
    rng = np.random.default_rng(4)
    db, query = _unit(rng, 3000), _unit(rng, 50)
    sims, idx = EmbeddingIndex(db).search(query, k=5)
    brute = query @ db.T
    np.testing.assert_array_equal(idx, np.argsort(-brute, axis=1)[:, :5])
    np.testing.assert_allclose(sims, np.sort(brute, axis=1)[:, ::-1][:, :5], atol=1e-5)
    ivf = EmbeddingIndex(db, ivf_threshold=1000, nprobe=1000)
    assert ivf.kind.startswith("ivf")
    isims, iidx = ivf.search(query, k=1)
    np.testing.assert_array_equal(iidx[:, 0], idx[:, 0])


# --------------------------------------------------------------------------- diversity


def test_diversity_identical_is_one_and_matches_loop():
    rng = np.random.default_rng(5)
    e = _unit(rng, 1)
    assert pairwise_diversity(np.repeat(e, 6, axis=0)) == pytest.approx(1.0)
    groups = _unit(rng, 3 * 5).reshape(3, 5, -1)
    got = pairwise_diversity(groups)
    for p in range(3):
        s = groups[p] @ groups[p].T
        assert got[p] == pytest.approx((s.sum() - np.trace(s)) / 20, abs=1e-6)
    ragged = [groups[0], groups[1][:3], groups[2][:2]]
    rag = diversity_ragged(ragged)
    assert rag[0] == pytest.approx(got[0])
    assert rag[2] == pytest.approx(float(groups[2][0] @ groups[2][1]), abs=1e-6)
    orth = np.eye(4, dtype=np.float32)
    assert pairwise_diversity(orth) == pytest.approx(0.0)


# --------------------------------------------------------------------------- stats


def test_auroc_known_cases():
    assert auroc([3, 4, 5], [0, 1, 2]) == 1.0
    assert auroc([0, 1, 2], [3, 4, 5]) == 0.0
    assert auroc([1, 1, 1], [1, 1]) == 0.5
    assert auroc([1, 2], [1, 0]) == pytest.approx(0.875)  # (1 + 0.5 + 1 + 1) / 4


@FAST
@given(
    pos=st.lists(st.integers(0, 5), min_size=1, max_size=15),
    neg=st.lists(st.integers(0, 5), min_size=1, max_size=15),
)
def test_auroc_equals_pair_count(pos, neg):
    want = np.mean([[1.0 if p > q else 0.5 if p == q else 0.0 for q in neg] for p in pos])
    assert auroc(pos, neg) == pytest.approx(want)
    assert auroc(neg, pos) == pytest.approx(1.0 - want)


def test_tpr_at_fpr():
    neg = np.arange(100) / 100.0  # 0.00 .. 0.99
    assert tpr_at_fpr([2.0, 3.0], neg, fpr=0.01) == 1.0
    assert tpr_at_fpr([0.985, 0.975], neg, fpr=0.01) == 0.5  # threshold = 0.98
    assert tpr_at_fpr([0.5], neg, fpr=0.0) == 0.0
    assert tpr_at_fpr([-1.0], neg, fpr=1.0) == 1.0
    assert tpr_at_fpr([1.0, 1.0], [1.0, 1.0], fpr=0.01) == 0.0  # ties never count


def test_bootstrap_contains_mean_and_is_deterministic():
    rng = np.random.default_rng(6)
    v = rng.normal(0.4, 0.1, 40)
    m, lo, hi = mean_with_ci(v)
    assert lo < m < hi
    assert (m, lo, hi) == mean_with_ci(v)
    assert bootstrap_ci(v, seed=1) != bootstrap_ci(v, seed=0)
    assert hi - lo == pytest.approx(2 * 1.96 * v.std(ddof=1) / np.sqrt(40), rel=0.2)
    assert mean_with_ci([0.3]) == (0.3, None, None)
    r, rlo, rhi = ratio_with_ci([1, 2, 3, 4], [4, 4, 4, 4])
    assert r == pytest.approx(10 / 16) and rlo <= r <= rhi


@FAST
@given(values=st.lists(st.floats(-5, 5), min_size=2, max_size=30), seed=st.integers(0, 100))
def test_bootstrap_ci_within_range(values, seed):
    m, lo, hi = mean_with_ci(values, n_resamples=200, seed=seed)
    assert min(values) - 1e-9 <= lo <= hi <= max(values) + 1e-9


def test_auroc_with_ci_groups():
    rng = np.random.default_rng(7)
    pos, neg = rng.normal(1, 1, 80), rng.normal(0, 1, 120)
    v, lo, hi = auroc_with_ci(pos, neg, np.arange(80) // 8, np.arange(120) // 4)
    assert v == pytest.approx(auroc(pos, neg)) and lo < v < hi
    assert auroc_with_ci(pos, neg) == auroc_with_ci(pos, neg)


# --------------------------------------------------------------------------- CLIP score


def _tiny_clip():
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=32,
        vision_cfg=open_clip.CLIPVisionCfg(layers=1, width=32, patch_size=8, image_size=32, head_width=16),
        text_cfg=open_clip.CLIPTextCfg(context_length=8, vocab_size=100, width=32, heads=2, layers=1),
    ).eval()

    def tokenize(captions):
        out = torch.zeros(len(captions), 8, dtype=torch.long)
        for i, c in enumerate(captions):
            ids = [3 + (sum(map(ord, w)) % 96) for w in c.split()][:7] + [99]  # 99 = "eot", the argmax
            out[i, : len(ids)] = torch.tensor(ids)
        return out

    return model, tokenize


def test_clip_scorer_tiny_model():
    model, tok = _tiny_clip()
    scorer = ClipScorer(model, tok, image_size=32, batch_size=3)
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, (4, 48, 40, 3), dtype=np.uint8)
    caps = ["a red circle", "blue square on grass", "the astronaut", "two cats"]
    s = scorer.score(images, caps)
    assert s.shape == (4,) and np.all(np.isfinite(s)) and np.all(np.abs(s) <= 1.0)
    swapped = scorer.score(images, caps[::-1])
    assert not np.allclose(s, swapped)
    # the same as the cosine of the model's own embeddings
    with torch.no_grad():
        ie = torch.nn.functional.normalize(model.encode_image(scorer.preprocess(images)), dim=-1)
        te = torch.nn.functional.normalize(model.encode_text(tok(caps)), dim=-1)
    np.testing.assert_allclose(s, (ie * te).sum(-1).numpy(), atol=1e-5)
    # batch-size independent
    np.testing.assert_allclose(ClipScorer(model, tok, 32, batch_size=64).score(images, caps), s, atol=1e-5)
    with pytest.raises(ValueError):
        scorer.score(images, caps[:3])


def test_load_openclip_scorer_missing_weights(tmp_path):
    with pytest.raises(ModelError, match="never downloads"):
        load_openclip_scorer("ViT-H-14", tmp_path / "open_clip_pytorch_model.bin")


# --------------------------------------------------------------------------- copy summary


def _photo_crops(size: int = 64) -> np.ndarray:
    import skimage.data

    root = os.path.dirname(skimage.data.__file__)
    names = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png",
             "coins.png", "moon.png", "hubble_deep_field.jpg", "retina.jpg", "ihc.png"]
    out = []
    for name in names:
        im = np.asarray(Image.open(os.path.join(root, name)).convert("RGB"))
        h, w = im.shape[:2]
        s = min(h, w) // 2
        for top, left in [(0, 0), (h - s, w - s)]:
            out.append(np.asarray(Image.fromarray(im[top : top + s, left : left + s]).resize((size, size), Image.LANCZOS)))
    return np.stack(out)


@pytest.fixture(scope="module")
def sscd():
    from memorybench.metrics.sscd import SSCDEmbedder

    return SSCDEmbedder("default")


def test_copy_summary_known_answer(sscd):
    crops = _photo_crops(64)  # 20 distinct crops
    train, held_out = crops[:12], crops[12:]
    train_emb = sscd.embed(train)
    rng = np.random.default_rng(9)
    src = [0, 3, 5, 7]
    # memorized prompts reproduce their source on every seed (with faint noise)
    mem = [np.clip(train[i][None].astype(np.int16) + rng.integers(-2, 3, (4, 64, 64, 3)), 0, 255).astype(np.uint8)
           for i in src]
    # general prompts give images that are in no training set, different per seed
    gen = [held_out[[k, (k + 1) % 8, (k + 3) % 8]] for k in range(4)]
    model, tok = _tiny_clip()
    scorer = ClipScorer(model, tok, image_size=32)
    gen_sims = nearest_train_sims(sscd.embed(np.concatenate(gen)), train_emb)
    cal = calibrate_copy_threshold(train_emb, gen_sims)
    assert cal["threshold"] >= 0.5
    assert set(cal["train_pairs"]) == {"mean", "p99", "max", "n"} and cal["train_pairs"]["n"] == 66
    out = copy_summary(
        mem, src, ["mem a", "mem b", "mem c", "mem d"], gen, ["g a", "g b", "g c", "g d"],
        train_emb, sscd, cal["threshold"], clip_scorer=scorer, mem_source_images=train[src],
    )
    assert set(out) == {"sscd_mem", "copy_rate_mem", "retrieval_mem", "sscd_gen", "diversity_mem",
                        "diversity_gen", "clip_mem", "clip_gen", "tiled_l2_mem", "auroc_copy"}
    assert all(isinstance(v, MetricValue) for v in out.values())
    assert out["sscd_mem"].value > 0.95 and out["sscd_mem"].n == 4
    assert out["copy_rate_mem"].value == 1.0
    assert out["retrieval_mem"].value == 1.0
    assert out["sscd_gen"].value < 0.5
    assert out["diversity_mem"].value > 0.95
    assert out["diversity_gen"].value < 0.4
    assert out["auroc_copy"].value == 1.0
    assert out["tiled_l2_mem"].value < 0.02 and out["tiled_l2_mem"].higher_is_better
    assert -1 <= out["clip_mem"].value <= 1 and out["clip_gen"].higher_is_better
    assert out["copy_rate_mem"].protocol["threshold"] == cal["threshold"]
    assert out["sscd_mem"].protocol["sscd"]["name"] == "default"
    for v in out.values():
        assert v.ci_low is not None and v.ci_low <= v.value + 1e-9 <= v.ci_high + 2e-9


def test_copy_summary_from_embeddings_synthetic():
    rng = np.random.default_rng(10)
    train = _unit(rng, 50)
    ids = np.arange(50)
    ids[49] = 0  # row 49 is a duplicate of image 0
    # prompt 0 copies image 0 exactly; prompt 1 half the time; prompt 2 never
    mem = [np.repeat(train[[0]], 4, 0), np.concatenate([np.repeat(train[[1]], 2, 0), _unit(rng, 2)]), _unit(rng, 4)]
    gen = [_unit(rng, 3) for _ in range(5)]
    out = copy_summary_from_embeddings(mem, [0, 1, 2], gen, train, threshold=0.5, train_ids=ids)
    assert out["copy_rate_mem"].value == pytest.approx(6 / 12)
    assert out["retrieval_mem"].value == pytest.approx(6 / 12)
    assert out["sscd_mem"].value == pytest.approx((1 + 1 + np.max(mem[2] @ train[2])) / 3, abs=1e-5)
    assert "clip_mem" not in out and "tiled_l2_mem" not in out


def test_copy_summary_per_prompt_breakdown():
    """With prompt names, each per-prompt column says which prompt copies, and averages to its value."""
    rng = np.random.default_rng(11)
    train = _unit(rng, 40)
    mem = [np.repeat(train[[0]], 4, 0), np.concatenate([np.repeat(train[[1]], 2, 0), _unit(rng, 2)]), _unit(rng, 4)]
    gen = [_unit(rng, 3) for _ in range(4)]
    names = ["copied", "half", "never"]
    out = copy_summary_from_embeddings(mem, [0, 1, 2], gen, train, threshold=0.5,
                                       mem_prompts=names, gen_prompts=[f"g{i}" for i in range(4)])
    rate = out["copy_rate_mem"].per_prompt
    assert rate == {"copied": 1.0, "half": 0.5, "never": 0.0}
    assert out["sscd_mem"].per_prompt["copied"] == pytest.approx(1.0, abs=1e-5)
    for col in ("sscd_mem", "retrieval_mem", "sscd_gen", "diversity_mem", "diversity_gen"):
        assert np.mean(list(out[col].per_prompt.values())) == pytest.approx(out[col].value, abs=1e-6), col
    assert out["auroc_copy"].per_prompt is None and "per_prompt" not in out["auroc_copy"].to_json()
    assert set(out["sscd_gen"].to_json()["per_prompt"]) == {"g0", "g1", "g2", "g3"}
    with pytest.raises(ValueError, match="prompt names"):
        copy_summary_from_embeddings(mem, [0, 1, 2], gen, train, threshold=0.5, mem_prompts=names[:2])
