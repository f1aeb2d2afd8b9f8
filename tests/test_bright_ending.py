"""Bright Ending local copy metric (Chen et al., ICLR 2025): known answers.

A generation that pastes one region of its training image into an unrelated image must score
high inside the mask and low on the whole image; an unrelated image low on both. The mask
capture must leave sampling unchanged, read the end token at the last step only, and the
metric's masks must come back identical from its cache.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from memorybench.metrics import bright_ending as be
from memorybench.model.pipeline import PipelineAdapter, SamplerSettings

SETTINGS = SamplerSettings(sampler="ddim", steps=3, guidance=7.5, height=32, width=32)


@pytest.fixture(scope="module")
def pipe():
    return PipelineAdapter.dummy(seed=0)


@pytest.fixture(scope="module")
def embedder():
    from memorybench.metrics.sscd import SSCDEmbedder

    return SSCDEmbedder("default")


def _photo_pair():
    """Two unrelated real photos at 128 px (the scikit-image wheel ships them)."""
    import skimage.data

    def small(image):
        t = torch.from_numpy(np.ascontiguousarray(image[:400, :400])).permute(2, 0, 1)[None].float()
        return torch.nn.functional.interpolate(t, size=(128, 128), mode="area")[0].permute(1, 2, 0).round().byte().numpy()

    return small(skimage.data.astronaut()), small(skimage.data.coffee())


def test_a_pasted_region_is_a_local_copy_and_an_unrelated_image_is_not(embedder):
    source, unrelated = _photo_pair()
    pasted = unrelated.copy()
    pasted[:64, :64] = source[:64, :64]  # a quarter of the training image, in place
    mask = np.zeros(source.shape[:2])
    mask[:64, :64] = 1.0
    r = be.local_copy_scores(np.stack([pasted, unrelated]), np.stack([source, source]), np.stack([mask, mask]),
                             embedder)
    assert r["local_sscd"][0] > 0.95 and r["local_l2"][0] == 0.0  # the region is the training image
    assert r["whole_sscd"][0] < 0.4 and r["whole_l2"][0] > 0.1  # whole-image similarity misses it
    assert r["local_sscd"][1] < 0.3 and r["whole_sscd"][1] < 0.3  # unrelated: low on both
    assert r["local_l2"][1] > 0.1


def test_local_l2_weights_pixels_by_the_mask():
    y = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    g = y.copy()
    g[0, :, 4:] = 51  # 0.2 on the right half only
    left, right = np.zeros((1, 8, 8)), np.zeros((1, 8, 8))
    left[0, :, :4], right[0, :, 4:] = 1.0, 1.0
    assert be.local_l2(g, y, left)[0] == 0.0
    assert be.local_l2(g, y, right)[0] == pytest.approx(0.2)
    assert be.local_l2(g, y, np.ones((1, 8, 8)))[0] == pytest.approx(0.2 / np.sqrt(2))


def test_masks_are_seed_means_scaled_to_one_and_crop_boxes_follow_them():
    maps = np.zeros((1, 2, 4, 4))
    maps[0, 0, 1, 2], maps[0, 1, 1, 2] = 0.4, 0.2  # mean 0.3 at (1, 2)
    maps[0, :, 3, 0] = 0.1
    masks = be.prompt_masks(maps, (4, 4))
    assert masks.shape == (1, 4, 4) and masks.max() == pytest.approx(1.0)
    assert masks[0, 1, 2] == pytest.approx(1.0) and masks[0, 3, 0] == pytest.approx(1 / 3)
    assert be.crop_box(masks[0], 0.5) == (1, 2, 2, 3)
    assert be.crop_box(masks[0], 0.3) == (1, 4, 0, 3)


def test_end_token_is_the_last_real_token(pipe):
    ids = pipe.tokenizer("a photo of a cat")["input_ids"]
    assert ids[be.end_token_index(pipe, "a photo of a cat")] == pipe.tokenizer.eos_token_id
    long = " ".join(["cat"] * 100)  # truncated: the end token sits at the last position
    assert be.end_token_index(pipe, long) == pipe.tokenizer.model_max_length - 1


def test_capture_reads_the_last_step_and_leaves_sampling_unchanged(pipe):
    prompts, seeds = ["a photo of a cat", "a blue car on a street"], [0, 1]
    plain = pipe.sample_latents(prompts, seeds, SETTINGS)
    calls = []
    original = be.EndTokenProbe.__call__

    def counting(self, attn, hidden_states, encoder_hidden_states=None, *a, **k):
        if encoder_hidden_states is not None:
            calls.append(self.pipe.state.step_index)
        return original(self, attn, hidden_states, encoder_hidden_states, *a, **k)

    be.EndTokenProbe.__call__ = counting
    try:
        maps = be.bright_ending_maps(pipe, prompts, seeds, SETTINGS)
    finally:
        be.EndTokenProbe.__call__ = original
    assert set(calls) == {0, 1, 2}  # every step passes through the probe ...
    assert maps.shape == (2, 16, 16)  # ... the map is the last step's, at the down block's 16x16
    assert np.all(maps >= 0) and np.all(maps <= 1)
    again = pipe.sample_latents(prompts, seeds, SETTINGS)
    assert torch.equal(plain, again)  # the processors are back and nothing changed
    alone = be.bright_ending_maps(pipe, prompts[1:], seeds[1:], SETTINGS)
    assert np.allclose(alone[0], maps[1], atol=1e-5)  # a map depends on its own prompt and seed


def test_metric_masks_come_back_identical_from_the_cache(pipe, tmp_path, monkeypatch):
    from memorybench.metrics.plugins import bright_ending_copy as plugin

    monkeypatch.setattr(plugin, "MASK_SEEDS", 2)
    run = SimpleNamespace(pipe=pipe, suite=SimpleNamespace(sampler=SETTINGS), cache_dir=tmp_path)
    first = plugin.cached_maps(run, ["a photo of a cat", "a painting of a house"])
    assert first.shape == (2, 2, 16, 16)

    def refuse(*a, **k):
        raise AssertionError("maps were recomputed instead of read from the cache")

    monkeypatch.setattr(plugin, "bright_ending_maps", refuse)
    assert np.array_equal(plugin.cached_maps(run, ["a painting of a house", "a photo of a cat"]), first[::-1])


def test_metric_columns_on_copies_and_on_unrelated_images(pipe, tmp_path, monkeypatch):
    from memorybench.api.metric import RunView
    from memorybench.metrics.plugins import bright_ending_copy as plugin

    monkeypatch.setattr(plugin, "MASK_SEEDS", 2)
    source, unrelated = (torch.nn.functional.interpolate(torch.from_numpy(x).permute(2, 0, 1)[None].float(), size=(32, 32),
                                                         mode="area")[0].permute(1, 2, 0).round().byte().numpy()
                         for x in _photo_pair())
    prompts = ["a photo of a cat", "a painting of a house"]
    data = SimpleNamespace(training=SimpleNamespace(images=np.stack([source, unrelated]), index={prompts[0]: 0, prompts[1]: 1}))
    images = {"memorized": {prompts[0]: np.stack([source, source]), prompts[1]: np.stack([source, source])}}
    run = RunView(suite=SimpleNamespace(sampler=SETTINGS), data=data, images=images, pipe=pipe, cache_dir=tmp_path,
                  progress=False)
    out = plugin.BrightEndingCopy().compute(run)
    copy, other = prompts
    assert out["be_sscd_mem"].per_prompt[copy] == pytest.approx(1.0, abs=1e-5)  # the training image itself
    assert out["be_l2_mem"].per_prompt[copy] == 0.0 and out["be_local_only_mem"].per_prompt[copy] == 0.0
    assert out["be_sscd_mem"].per_prompt[other] < 0.5 and out["be_l2_mem"].per_prompt[other] > 0.1
    assert out["be_sscd_mem"].n == 2 and out["be_sscd_mem"].protocol["threshold"] == plugin.DEFAULT_THRESHOLD
    assert 0 < out["be_mask_area_mem"].value <= 1
