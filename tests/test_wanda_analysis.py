"""The wanda-masks analysis: IoU and density on hand-built masks with known answers, subset
choice, and ``memorybench analyze wanda-masks`` end to end on the tiny world (tiny counts)."""

import json

import numpy as np
import pytest
import torch

from memorybench.analysis.wanda_masks import choose_subsets, compare_masks, densities, iou, union_over_steps
from memorybench.cli import main
from memorybench.errors import ConfigError


def _mask(bits):
    return torch.tensor(bits, dtype=torch.bool)


def test_iou_known_values():
    a = _mask([[1, 1, 0, 0]])
    b = _mask([[0, 1, 1, 0]])
    assert iou(a, b) == pytest.approx(1 / 3)
    assert iou(a, a) == 1.0
    assert iou(a, _mask([[0, 0, 1, 1]])) == 0.0
    assert iou(_mask([[0, 0]]), _mask([[0, 0]])) == 1.0  # both empty: identical by convention
    with pytest.raises(ValueError, match="shapes differ"):
        iou(a, _mask([[1, 0]]))


def test_compare_masks_known_answers():
    # two layers, two steps, three subsets; masks are (T=2, 1, 4)
    s1 = {"L0": _mask([[[1, 0, 0, 0]], [[0, 1, 0, 0]]]), "L1": _mask([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])}
    s2 = {"L0": _mask([[[1, 0, 0, 0]], [[0, 0, 1, 0]]]), "L1": _mask([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])}
    s3 = {"L0": _mask([[[0, 0, 0, 1]], [[0, 0, 0, 0]]]), "L1": _mask([[[0, 0, 1, 1]], [[0, 0, 0, 0]]])}
    c1 = {"L0": _mask([[[1, 1, 1, 1]], [[0, 0, 0, 0]]]), "L1": _mask([[[0, 0, 0, 0]], [[0, 0, 0, 0]]])}
    c2 = {"L0": _mask([[[1, 0, 0, 0]], [[0, 0, 0, 0]]]), "L1": _mask([[[1, 1, 0, 0]], [[0, 0, 0, 0]]])}
    # unions: s1 L0 {0,1} L1 {0,1}; s2 L0 {0,2} L1 {0,1}; s3 L0 {3} L1 {2,3}
    out = compare_masks([s1, s2, s3], [c1, c2])
    m = np.array(out["union_iou_matrix"])
    # pooled over layers (8 positions): s1 = {0,1,4,5}, s2 = {0,2,4,5}, s3 = {3,6,7}
    assert m[0, 1] == pytest.approx(3 / 5)
    assert m[0, 2] == 0.0 and m[1, 2] == 0.0
    assert np.allclose(np.diag(m), 1.0) and np.allclose(m, m.T)
    assert out["union_iou_mean"] == pytest.approx((3 / 5) / 3)
    assert out["union_iou_min"] == 0.0
    # per layer: L0 pairs (1/3, 0, 0); L1 pairs (1, 0, 0)
    assert out["union_iou_per_layer"]["L0"] == pytest.approx((1 / 3) / 3)
    assert out["union_iou_per_layer"]["L1"] == pytest.approx(1 / 3)
    # per (layer, step): L0 step 0: s1=s2={0}, s3={3} -> (1, 0, 0)/3; step 1: {1},{2},{} -> 0
    grid = out["step_iou_per_layer_timestep"]
    assert grid[0] == pytest.approx([1 / 3, 0.0])
    # L1 step 0: s1=s2={0,1}, s3={2,3} -> (1, 0, 0)/3; step 1: all empty -> identical -> 1
    assert grid[1] == pytest.approx([1 / 3, 1.0])
    # control, pooled: c1 = {0,1,2,3}, c2 = {0,4,5}: general-general 1/6
    ctrl = out["control"]
    assert ctrl["general_iou_mean"] == pytest.approx(1 / 6)
    assert ctrl["general_iou_per_layer"] == pytest.approx({"L0": 1 / 4, "L1": 0.0})
    # memorized x general: s1 (2/6, 3/4), s2 (2/6, 3/4), s3 (1/6, 0)
    assert ctrl["memorized_vs_general"]["mean"] == pytest.approx((2 / 6 + 3 / 4 + 2 / 6 + 3 / 4 + 1 / 6) / 6)
    assert ctrl["memorized_vs_general"]["per_layer"]["L1"] == pytest.approx(1 / 3)
    assert np.array(ctrl["iou_matrix_all"]).shape == (5, 5)


def test_densities_known_values():
    masks = {"A": _mask([[[1, 0], [0, 0]], [[1, 1], [0, 0]]]),  # (T=2, 2, 2): union {00, 01}
             "B": _mask([[[0, 0], [0, 0]], [[0, 0], [0, 1]]])}  # union {11}
    d = densities(masks)
    assert d["total"] == pytest.approx(3 / 8)
    assert d["per_layer"] == pytest.approx({"A": 0.5, "B": 0.25})
    assert d["per_timestep"] == pytest.approx([1 / 8, 3 / 8])
    assert torch.equal(union_over_steps(masks)["A"], _mask([[1, 1], [0, 0]]))


def test_choose_subsets():
    pool = [f"p{i}" for i in range(12)]
    sets = choose_subsets(pool, 3, 4, "disjoint", seed=1)
    assert [len(s) for s in sets] == [4, 4, 4]
    assert len(set().union(*map(set, sets))) == 12  # disjoint and covering
    assert sets == choose_subsets(pool, 3, 4, "disjoint", seed=1)  # seeded
    assert sets != choose_subsets(pool, 3, 4, "disjoint", seed=2)
    rand = choose_subsets(pool, 5, 6, "random", seed=0)
    assert all(len(set(s)) == 6 for s in rand)
    with pytest.raises(ConfigError, match="disjoint subsets of 5 need 15"):
        choose_subsets(pool, 3, 5, "disjoint")
    with pytest.raises(ConfigError, match=">= 2"):
        choose_subsets(pool, 1, 2, "random")


def test_cli_analyze_wanda_masks_end_to_end(tmp_path, capsys):
    out = tmp_path / "an"
    rc = main(["analyze", "wanda-masks", "--suite", "tinyworld-v1", "--subsets", "2", "--subset-size", "2",
               "--set", "timesteps=2", "--out", str(out), "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "pairwise IoU of union masks" in text and "general-general" in text
    report = json.loads((out / "wanda-masks.json").read_text())
    assert (out / "wanda-masks-iou.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    sub = report["subsets"]
    assert sub["mode"] == "disjoint" and sub["size"] == 2 and not set(sub["prompts"][0]) & set(sub["prompts"][1])
    assert report["wanda_config"]["timesteps"] == 2
    m = np.array(report["iou"]["union_iou_matrix"])
    assert m.shape == (2, 2) and 0.0 <= m[0, 1] <= 1.0
    assert np.array(report["iou"]["control"]["iou_matrix_all"]).shape == (4, 4)
    general = set(report["control"]["prompts"][0])
    assert general and not general & set(sub["prompts"][0] + sub["prompts"][1])
    dens = report["density"]
    assert len(dens["per_timestep_mean"]) == 2
    # s = 1% per row and step: the union over 2 steps holds at most 2 x ceil(1% of the row) per row
    assert 0.0 < dens["max_total"] <= 0.05
    assert report["provenance"]["memorybench_version"] and report["suite"]["name"] == "tinyworld-v1"


def test_cli_analyze_rejects_bad_subsets(tmp_path, capsys):
    rc = main(["analyze", "wanda-masks", "--suite", "tinyworld-v1", "--subsets", "5", "--subset-size", "6",
               "--out", str(tmp_path), "--no-progress"])
    assert rc == 2
    assert "need 30" in capsys.readouterr().err
