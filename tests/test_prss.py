"""PRSS (Chen et al., CVPR 2025): known answers for the re-anchoring strength, the alternatives
in embedding space, the search's choice per image, and the re-anchored guidance itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memorybench.methods import prss
from memorybench.model.pipeline import CFGPrediction, PipelineAdapter, SamplerSettings
from memorybench.run.validate import validate_method


def authors_scale(m: float, g: float, target: float, full: float) -> float:
    """The public code's form: scaler = (g l_pr - thres) / (g - 1), s = min((m - scaler) / (thres - scaler) g, g)."""
    scaler = (g * target - full) / (g - 1)
    return min((m - scaler) / (full - scaler) * g, g)


@pytest.mark.parametrize("g", [7.5, 3.0])
def test_reanchoring_strength_is_the_authors_formula(g):
    mags = torch.tensor([3.0, 3.5, 4.0, 4.99, 5.0, 9.0], dtype=torch.float64)
    s = prss.reanchor_scale(mags, g, 3.0, 5.0)
    assert s[0] == pytest.approx(1.0) and s[4] == pytest.approx(g) and s[5] == pytest.approx(g)
    assert s.tolist() == pytest.approx([authors_scale(m, g, 3.0, 5.0) for m in mags.tolist()])


def test_alternatives_keep_norms_and_sit_at_the_asked_cosine():
    states = torch.randn(20, 128, generator=torch.Generator().manual_seed(0)) * 3
    alt = prss.alternative(states, 0.7, prss.row_generator("a photo", 4))
    assert torch.equal(alt[0], states[0])  # BOS untouched
    cos = torch.nn.functional.cosine_similarity(alt[1:].double(), states[1:].double(), dim=-1)
    assert torch.allclose(cos, torch.full_like(cos, 0.7), atol=1e-5)
    assert torch.allclose(alt[1:].norm(dim=-1), states[1:].norm(dim=-1), rtol=1e-5)
    same = prss.alternative(states, 0.7, prss.row_generator("a photo", 4))
    other = prss.alternative(states, 0.7, prss.row_generator("a photo", 5))
    assert torch.equal(alt, same) and not torch.allclose(alt, other)


def test_search_takes_the_first_alternative_under_target_else_the_lowest(monkeypatch):
    # a row's "magnitude" under a candidate is that candidate's first value in the row
    monkeypatch.setattr(prss, "text_noise_norms", lambda pipe, x, cond, uncond, t, sched: cond[:, 0, 0].double())

    class Pipe:
        device = "cpu"

        def make_scheduler(self, name):
            return PipelineAdapter.dummy(seed=0).make_scheduler(name)

    cond = torch.zeros(3, 2, 1)
    first = torch.tensor([0.5, 9.0, 4.0], dtype=torch.float64)  # row 0 is under the target already
    cands = [torch.tensor([[[7.0]] * 2, [[8.0]] * 2, [[6.0]] * 2]),
             torch.tensor([[[7.0]] * 2, [[0.9]] * 2, [[5.0]] * 2]),
             torch.tensor([[[7.0]] * 2, [[0.1]] * 2, [[4.5]] * 2])]
    settings = SamplerSettings(sampler="ddim", steps=3, guidance=3.0)
    chosen, pick = prss.semantic_search(Pipe(), cond, cond, torch.zeros(3, 4, 2, 2), settings, cands, 1.0, first)
    assert pick == [0, 2, 0]  # row 1: the first under 1.0; row 2: none is, and its own 4.0 is the lowest
    assert chosen[1, 0, 0] == pytest.approx(0.9) and torch.equal(chosen[2], cond[2]) and torch.equal(chosen[0], cond[0])


def test_reanchored_guidance_per_image(monkeypatch):
    method = prss.PRSS()
    g, n = 3.0, 2
    uncond, cond = torch.zeros(n, 4, 2, 2), torch.ones(n, 4, 2, 2)
    original = torch.full((n, 4, 2, 2), 5.0)
    method._original, method._triggered = cond, torch.tensor([True, False])
    monkeypatch.setattr(method, "_original_branch", lambda pipe, pred, t: original)
    full = method.config.pr_full_rms * 4  # sqrt(16 values per image)
    monkeypatch.setattr(prss, "text_noise_magnitude", lambda pipe, pred, t, sched: torch.tensor([10 * full, 10 * full]))
    method._schedule = object()
    out = method.combine_guidance(None, 0, 961, CFGPrediction(uncond, cond, uncond), g)
    # triggered and past pr_full: s = g, the memorized prompt is the anchor: 5 + 3 (1 - 5) = -7
    assert torch.allclose(out[0], torch.full((4, 2, 2), -7.0))
    assert torch.allclose(out[1], torch.full((4, 2, 2), 3.0))  # not triggered: ordinary guidance 0 + 3 (1 - 0)
    monkeypatch.setattr(prss, "text_noise_magnitude", lambda pipe, pred, t, sched: torch.tensor([0.0, 0.0]))
    out = method.combine_guidance(None, 1, 921, CFGPrediction(uncond, cond, uncond), g)
    assert torch.allclose(out, torch.full((n, 4, 2, 2), 3.0))  # under pr_target: ordinary guidance


def test_prss_validates():
    from memorybench import METHODS

    report = validate_method(METHODS.get("prss"))
    assert report.ok, report.lines()


@pytest.mark.slow
def test_prss_lowers_copy_similarity_on_the_tiny_world():
    """4 of the most duplicated memorized prompts x 2 seeds at the suite's sampler: SSCD to the
    training image falls against none (probe: 0.617 -> 0.490)."""
    from memorybench import METHODS
    from memorybench.api.method import MethodContext, apply_method
    from memorybench.metrics.sscd import SSCDEmbedder
    from memorybench.tinyworld import load_world_data, world_path

    data = load_world_data(n_general=0)
    pipe = PipelineAdapter.from_folder(world_path() / "pipeline", model_id="tinyworld-v1")
    settings = SamplerSettings(sampler="ddim", steps=25, guidance=3.0, height=64, width=64)
    dup = int(data.memorized_dup_counts.max())
    picks = [i for i, d in enumerate(data.memorized_dup_counts) if d == dup][:4]
    prompts = [data.memorized_prompts[i] for i in picks for _ in (0, 1)]
    seeds = [0, 1] * 4
    embedder = SSCDEmbedder("default")
    source = np.repeat(embedder.embed(data.train_images[data.memorized_indices[picks]]), 2, axis=0)

    def sscd(name):
        method = METHODS.get(name)()
        with apply_method(method, pipe, MethodContext(settings=settings)):
            images = pipe.generate(prompts, seeds, settings, method=method)
        return float(np.einsum("nd,nd->n", embedder.embed(images), source).mean()), method

    base, _ = sscd("none")
    mitigated, method = sscd("prss")
    assert all(p >= 0 for p in method.picks)  # every memorized image was triggered
    assert mitigated < base - 0.05, f"prss {mitigated:.3f} vs none {base:.3f}"
