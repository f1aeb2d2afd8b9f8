"""The Carlini et al. 2023 clique attack: distances, bounded clique search, verification."""

from __future__ import annotations

import types

import networkx as nx
import numpy as np
import pytest

from memorybench.metrics.extraction import (
    LINK_FRACTION,
    CARLINI2023,
    PRESETS,
    CHAVHAN2024,
    TINYWORLD,
    attack_prompt,
    calibrate_tinyworld_threshold,
    extraction_summary,
    find_clique,
    get_preset,
    link_graph,
)
from memorybench.metrics.tiled_l2 import tiled_l2_pairwise

PRESET = TINYWORLD.with_(threshold=0.05, verify_l2=0.08)


def _noise(rng, n, size=32):
    return rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _jitter(rng, img, n, amp=2):
    x = img[None].astype(np.int16) + rng.integers(-amp, amp + 1, size=(n, *img.shape))
    return np.clip(x, 0, 255).astype(np.uint8)


def _naive(x, y, grid=4):
    h, w = x.shape[:2]
    best = 0.0
    for i in range(grid):
        for j in range(grid):
            a = x[i * h // grid:(i + 1) * h // grid, j * w // grid:(j + 1) * w // grid].astype(np.float64) / 255
            b = y[i * h // grid:(i + 1) * h // grid, j * w // grid:(j + 1) * w // grid].astype(np.float64) / 255
            best = max(best, float(np.sqrt(np.mean((a - b) ** 2))))
    return best


def test_vectorised_distances_equal_naive_loop():
    rng = np.random.default_rng(0)
    imgs = _noise(rng, 5, 64)
    imgs[1] = imgs[0]
    imgs[2, :16, :16] = 0
    d = tiled_l2_pairwise(imgs)
    for i in range(5):
        for j in range(5):
            assert d[i, j] == pytest.approx(_naive(imgs[i], imgs[j]), abs=1e-6)


def test_planted_clique_is_found_and_verified():
    rng = np.random.default_rng(1)
    source = _noise(rng, 1)[0]
    imgs = np.concatenate([_noise(rng, 7), _jitter(rng, source, 4)])  # 4 near-copies among noise
    r = attack_prompt(imgs, PRESET, threshold=0.05, verify_l2=0.08, source_image=source, prompt="p")
    assert r.flagged and r.verified
    assert set(r.clique) == {7, 8, 9, 10}
    assert r.representative in r.clique and r.source_l2 < 0.08


def test_identical_copies_form_a_clique():
    rng = np.random.default_rng(2)
    img = _noise(rng, 1)[0]
    imgs = np.concatenate([np.repeat(img[None], 3, 0), _noise(rng, 5)])
    r = attack_prompt(imgs, PRESET, threshold=0.05, verify_l2=0.08)
    assert r.flagged and sorted(r.clique) == [0, 1, 2]
    assert not r.verified  # nothing to verify against


def test_no_clique_among_distinct_images():
    rng = np.random.default_rng(3)
    r = attack_prompt(_noise(rng, 12), PRESET, threshold=0.05, verify_l2=0.08)
    assert not r.flagged and r.clique is None and not r.verified


def test_clique_smaller_than_k_is_not_flagged():
    rng = np.random.default_rng(4)
    img = _noise(rng, 1)[0]
    imgs = np.concatenate([np.repeat(img[None], 2, 0), _noise(rng, 6)])
    assert not attack_prompt(imgs, PRESET, threshold=0.05, verify_l2=0.08).flagged


def test_verification_separates_source_copy_from_other_copy():
    rng = np.random.default_rng(5)
    source, other = _noise(rng, 2)
    train = np.stack([other, source])
    copies_src = np.concatenate([_jitter(rng, source, 4), _noise(rng, 4)])
    copies_other = np.concatenate([_jitter(rng, other, 4), _noise(rng, 4)])
    a = attack_prompt(copies_src, PRESET, 0.05, 0.08, source_image=source)
    b = attack_prompt(copies_other, PRESET, 0.05, 0.08, source_image=source)
    assert a.flagged and a.verified
    assert b.flagged and not b.verified  # identified, but not the prompt's training image
    # without a known source, the nearest training image is reported
    c = attack_prompt(copies_other, PRESET, 0.05, 0.08, train_images=train)
    assert c.verified and c.nearest_train == 0


def test_sscd_verification_can_veto():
    rng = np.random.default_rng(6)
    source = _noise(rng, 1)[0]
    imgs = _jitter(rng, source, 4)
    emb = np.tile(np.eye(4)[0], (4, 1))
    ok = attack_prompt(imgs, PRESET, 0.05, 0.08, source_image=source, embeddings=emb, source_embedding=np.eye(4)[0])
    veto = attack_prompt(imgs, PRESET, 0.05, 0.08, source_image=source, embeddings=emb, source_embedding=np.eye(4)[1])
    assert ok.verified and ok.source_sscd == pytest.approx(1.0)
    assert not veto.verified and veto.source_sscd == pytest.approx(0.0)


def test_bounded_search_stops_at_first_clique():
    g = nx.disjoint_union_all([nx.complete_graph(12) for _ in range(30)])  # 30 cliques of 12
    s = find_clique(g, 10)
    assert s.clique is not None and len(s.clique) >= 10 and s.visited == 1
    # pruning: a graph whose nodes all have degree < k-1 is never enumerated
    s = find_clique(nx.cycle_graph(200), 4)
    assert s.clique is None and s.visited == 0 and s.core_size == 0


def test_bound_on_enumeration_is_recorded():
    # many triangles sharing no k=4 clique: the bound stops enumeration
    g = nx.Graph()
    for t in range(50):
        g.add_edges_from([(3 * t, 3 * t + 1), (3 * t + 1, 3 * t + 2), (3 * t, 3 * t + 2)])
    g.add_edges_from((3 * t, 3 * (t + 1)) for t in range(49))  # raise degrees past the k-1 core pruning
    g.add_edges_from((3 * t + 1, 3 * (t + 1) + 1) for t in range(49))
    g.add_edges_from((3 * t + 2, 3 * (t + 1) + 2) for t in range(49))
    s = find_clique(g, 4, max_cliques=5)
    assert s.clique is None and s.truncated and s.visited == 5
    full = find_clique(g, 4)
    assert full.clique is None and not full.truncated and full.visited > 5


def test_link_graph_is_strict():
    d = np.array([[0.0, 0.1, 0.2], [0.1, 0.0, 0.3], [0.2, 0.3, 0.0]])
    g = link_graph(d, 0.2)
    assert set(map(frozenset, g.edges)) == {frozenset({0, 1})}


def test_summary_columns_and_presets():
    rng = np.random.default_rng(7)
    source = _noise(rng, 1)[0]
    mem = [attack_prompt(_jitter(rng, source, 4), PRESET, 0.05, 0.08, source_image=source, prompt="m0"),
           attack_prompt(_noise(rng, 4), PRESET, 0.05, 0.08, source_image=source, prompt="m1")]
    gen = [attack_prompt(_noise(rng, 4), PRESET, 0.05, 0.08, prompt="g0")]
    out = extraction_summary(mem, gen, PRESET, 0.05, 0.08)
    assert out["extraction_flagged"].value == 0.5 and out["extraction_verified"].value == 0.5
    assert out["extraction_false_gen"].value == 0.0
    assert out["extraction_flagged"].protocol["flagged_prompts"] == ["m0"]
    assert CHAVHAN2024.n_generations == 50 and CHAVHAN2024.k == 3 and CHAVHAN2024.threshold == pytest.approx(50 / 255)
    assert CARLINI2023.n_generations == 500 and CARLINI2023.k == 10
    assert set(PRESETS) == {"chavhan2024", "carlini2023", "tinyworld"}
    with pytest.raises(Exception, match="unknown extraction preset"):
        get_preset("nope")


def test_preset_caps_generations():
    rng = np.random.default_rng(8)
    img = _noise(rng, 1)[0]
    imgs = np.concatenate([_noise(rng, 4), np.repeat(img[None], 3, 0)])
    assert attack_prompt(imgs, PRESET, 0.05, 0.08).flagged
    assert not attack_prompt(imgs, PRESET.with_(n_generations=4), 0.05, 0.08).flagged


def test_tinyworld_calibration_on_a_fake_world():
    rng = np.random.default_rng(9)
    base = _noise(rng, 3)
    imgs = np.concatenate([base, _jitter(rng, base[0], 1, amp=40), _noise(rng, 2)])
    world = types.SimpleNamespace(
        train_images=imgs, train_captions=["a", "b", "c", "a", "m0", "m1"],
        train_kind=["general"] * 4 + ["memorized"] * 2, memorized_indices=np.array([4, 5]))
    cal = calibrate_tinyworld_threshold(world)
    floor = tiled_l2_pairwise(imgs[[0]], imgs[[3]])[0, 0]
    assert cal["threshold"] == pytest.approx(LINK_FRACTION * floor)
    assert cal["verify_l2"] == pytest.approx(1.5 * cal["threshold"])
    assert cal["real_same_caption_pairs"]["n"] == 1


def _fake_run(rng, n_mem=3, n_gen=3, seeds=6):
    from memorybench.api.metric import RunView

    train = np.concatenate([_noise(rng, n_mem, 64), _noise(rng, 6, 64)])
    caps = [f"m{i}" for i in range(n_mem)] + ["a", "a", "b", "b", "c", "d"]
    # real same-caption pairs 'a' and 'b' differ by a bounded amount: the calibration floor
    train[n_mem + 1] = _jitter(rng, train[n_mem], 1, amp=60)[0]
    train[n_mem + 3] = _jitter(rng, train[n_mem + 2], 1, amp=60)[0]
    world = types.SimpleNamespace(train_images=train, train_captions=caps,
                                  train_kind=["memorized"] * n_mem + ["general"] * 6,
                                  memorized_indices=np.arange(n_mem))
    mem = {f"m{i}": _jitter(rng, train[i], seeds, amp=3) for i in range(n_mem)}
    mem["m0"] = _noise(rng, seeds, 64)  # this memorized prompt no longer copies
    gen = {f"g{i}": _noise(rng, seeds, 64) for i in range(n_gen)}
    training = types.SimpleNamespace(images=train, index={f"m{i}": i for i in range(n_mem)})
    data = types.SimpleNamespace(world=world, training=training)
    return RunView(suite=types.SimpleNamespace(name="fake"), data=data, images={"memorized": mem, "general": gen},
                   progress=False)


def test_extraction_plugin_on_a_hand_built_run():
    from memorybench.metrics.plugins.extraction_attack import ExtractionAttack

    run = _fake_run(np.random.default_rng(10))
    metric = ExtractionAttack()
    metric.use_sscd = False
    out = metric.compute(run)
    assert out["extraction_flagged"].value == pytest.approx(2 / 3)
    assert out["extraction_verified"].value == pytest.approx(2 / 3)
    assert out["extraction_false_gen"].value == 0.0
    cal = run.calibration["extraction"]
    assert 0 < cal["threshold"] < cal["verify_l2"]
    assert cal["this_run_within_prompt_distances"]["share_general_pairs_linked"] == 0.0
    assert out["extraction_flagged"].protocol["suite_seeds_memorized"] == [6]
