"""Detectors from 2025-2026 papers: sail-sharpness (SAIL, Jeon, Kim and No) and anisotropy
(Asthana and Belagiannis).

Known answers through a UNet replaced by a function whose noise predictions are set by hand
(the finite-difference Hessian-vector product of a linear text-noise field; the cosine of
aligned and opposed halves), the declared UNet cost counted by a hook, per-prompt scores that
do not depend on the other prompts of the call, and separation of memorized from general
prompts on the shipped tiny world.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memorybench.api.detector import DETECTORS
from memorybench.model.pipeline import CFGPrediction, PipelineAdapter, SamplerSettings

SETTINGS = SamplerSettings(sampler="ddim", steps=5, guidance=7.5, height=32, width=32)
LATENT = (4, 16, 16)  # the dummy pipeline's latent at 32 px
PROMPTS = ["a photo of a red cat", "a painting of a house", "a blue car on a street"]


@pytest.fixture(scope="module")
def pipe():
    return PipelineAdapter.dummy(seed=0)


def _count_calls(pipe, fn):
    seen = [0]
    handle = pipe.unet.register_forward_hook(lambda m, args, out: seen.__setitem__(0, seen[0] + args[0].shape[0]))
    try:
        result = fn()
    finally:
        handle.remove()
    return result, seen[0]


@pytest.mark.parametrize("name", ["sail-sharpness", "anisotropy"])
def test_declared_cost_is_what_the_unet_sees(pipe, name):
    detector = DETECTORS.get(name)()
    scores, calls = _count_calls(pipe, lambda: detector.score(pipe, PROMPTS, SETTINGS))
    assert calls == detector.unet_calls_per_prompt(SETTINGS) * len(PROMPTS)
    assert scores.scores.shape == (len(PROMPTS),) and np.isfinite(scores.scores).all()


@pytest.mark.parametrize("name", ["sail-sharpness", "anisotropy"])
def test_a_prompts_score_does_not_depend_on_the_others(pipe, name):
    detector = DETECTORS.get(name)()
    together = detector.score(pipe, PROMPTS, SETTINGS).scores
    alone = detector.score(pipe, PROMPTS[1:2], SETTINGS).scores
    assert alone[0] == pytest.approx(together[1], rel=1e-4)


def test_anisotropy_is_the_weighted_sum_of_its_components(pipe):
    detector = DETECTORS.get("anisotropy").from_settings({"gamma_norm": 0.5, "gamma_cosine": 3.0, "seeds": 2})
    out = detector.score(pipe, PROMPTS, SETTINGS)
    assert np.allclose(out.scores, 0.5 * out.components["norm"] + 3.0 * out.components["cosine"])
    assert ((out.components["cosine"] >= -1) & (out.components["cosine"] <= 1)).all()


class _ByHand:
    """Stands in for ``PipelineAdapter.cfg_prediction``: uncond = base, cond = base + field(x)."""

    def __init__(self, field, base):
        self.field, self.base = field, base

    def __call__(self, latents, t, cond, uncond, scheduler):
        base = self.base.expand_as(latents)
        return CFGPrediction(base, base + self.field(latents), latents)


def test_anisotropy_cosine_known_answers(pipe, monkeypatch):
    assert pipe.latent_shape(32, 32) == LATENT
    base = torch.zeros(1, *LATENT)
    base[:, 0] = 1.0  # the unconditional prediction points along channel 0 at every pixel
    detector = DETECTORS.get("anisotropy").from_settings({"gamma_norm": 0.0, "gamma_cosine": 1.0})
    monkeypatch.setattr(pipe, "cfg_prediction", _ByHand(lambda x: 2.0 * base.expand_as(x), base))
    assert detector.score(pipe, PROMPTS[:1], SETTINGS).scores[0] == pytest.approx(1.0)  # d = 2 base: aligned
    monkeypatch.setattr(pipe, "cfg_prediction", _ByHand(lambda x: -0.5 * base.expand_as(x), base))
    assert detector.score(pipe, PROMPTS[:1], SETTINGS).scores[0] == pytest.approx(-1.0)  # opposed
    flip = torch.zeros(1, *LATENT)
    flip[:, 1] = 3.0
    monkeypatch.setattr(pipe, "cfg_prediction", _ByHand(lambda x: flip.expand_as(x), base))
    out = detector.score(pipe, PROMPTS[:1], SETTINGS)
    assert out.scores[0] == pytest.approx(0.0, abs=1e-9)  # orthogonal
    assert out.components["norm"][0] == pytest.approx(3.0 * 16.0)  # ||d|| = 3 x sqrt(256 pixels)


def test_sail_sharpness_is_the_hessian_vector_product_of_a_linear_field(pipe, monkeypatch):
    # text noise d(x) = A x with A = diag(2) on channel 0, 0 elsewhere: ds = -A x / sigma,
    # J_ds = -A / sigma, so ||J_ds ds|| = ||A A x|| / sigma^2 = 4 ||x[channel 0]|| / sigma^2
    mask = torch.zeros(1, *LATENT)
    mask[:, 0] = 1.0
    base = torch.zeros(1, *LATENT)
    monkeypatch.setattr(pipe, "cfg_prediction", _ByHand(lambda x: 2.0 * mask * x, base))
    detector = DETECTORS.get("sail-sharpness").from_settings({"seeds": 1, "steps": 1})
    got = detector.score(pipe, PROMPTS[:1], SETTINGS).scores[0]
    scheduler = pipe.make_scheduler("ddim")
    scheduler.set_timesteps(SETTINGS.steps)
    t = int(scheduler.timesteps[0])
    sigma2 = 1.0 - float(scheduler.alphas_cumprod[t])
    x = pipe.initial_latents([0], SETTINGS, scheduler)
    expected = float((4.0 * mask * x).flatten().norm()) / sigma2
    assert got == pytest.approx(expected, rel=1e-4)


@pytest.mark.slow
def test_both_separate_memorized_from_general_prompts_on_the_tiny_world():
    from memorybench.tinyworld import load_world_data, world_path

    data = load_world_data(n_general=8)
    pipe = PipelineAdapter.from_folder(world_path() / "pipeline", model_id="tinyworld-v1")
    settings = SamplerSettings(sampler="ddim", steps=25, guidance=3.0)
    dup = int(data.memorized_dup_counts.max())
    memorized = [p for p, d in zip(data.memorized_prompts, data.memorized_dup_counts) if d == dup][:4]
    general = list(data.heldout_prompts[:4])  # held-out general prompts, never trained on
    for name, settings_ in (("anisotropy", {}), ("sail-sharpness", {"seeds": 2})):
        scores = DETECTORS.get(name).from_settings(settings_).score(pipe, memorized + general, settings).scores
        assert scores[:4].mean() > scores[4:].mean(), f"{name}: {scores}"
