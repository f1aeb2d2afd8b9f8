"""Finding Dori's adversarial fine-tuning on the shipped world's own memorized images: the
fine-tuning set of tinyworld-defence-v1 (the world's training set, its memorized images
protected) and the ``mitigated`` surrogate of dori-adv-finetune."""

import numpy as np
import pytest
import torch

from memorybench.methods.dori_adv_finetune import DoriAdvFinetune, _AdversarialRounds, surrogate_latents
from memorybench.model.sampling import SamplerSettings
from memorybench.suites.sources.finetune_dup import world_finetune_set


def _fake_world():
    from memorybench.datasets.tinyworld.generator import TinyWorldData

    g = np.random.default_rng(0)
    return TinyWorldData(seed=0, train_images=g.integers(0, 256, (7, 8, 8, 3), dtype=np.uint8),
                         train_captions=[f"m{i}" for i in range(3)] + [f"g{i}" for i in range(4)],
                         train_dup_counts=np.array([300, 100, 300, 1, 1, 1, 1]), train_kind=["memorized"] * 3 + ["general"] * 4,
                         memorized_indices=np.arange(3), memorized_prompts=["m0", "m1", "m2"],
                         heldout_prompts=["h0"], heldout_images=np.zeros((1, 8, 8, 3), np.uint8))


def test_world_set_protects_the_memorized_images_with_their_training_duplicates():
    world = _fake_world()
    ft = world_finetune_set(world)
    assert ft.protected.tolist() == [0, 1, 2]
    assert ft.protected_captions == ["m0", "m1", "m2"]
    assert ft.dup_counts.tolist() == [300, 100, 300, 1, 1, 1, 1]  # as the world was trained
    assert np.array_equal(ft.protected_images, world.train_images[:3])
    assert ft.description["samples"] == 704
    # the hash follows the world's data: another image, another set
    world.train_images[5, 0, 0, 0] ^= 1
    assert world_finetune_set(world).sha256 != ft.sha256


def test_later_settings_keep_the_shipped_config_hash_at_their_defaults():
    assert DoriAdvFinetune().config_sha256() == "98f2316171a420504cc1053688ce5602d47ef402de115dca90001c568827d580"
    m = DoriAdvFinetune.from_settings({"surrogate": "mitigated", "drop_protected": True})
    assert m.config_dict()["surrogate"] == "mitigated" and m.config_dict()["drop_protected"] is True
    assert "surrogate_transition_t" not in m.config_dict() and m.config_sha256() != DoriAdvFinetune().config_sha256()
    with pytest.raises(Exception, match="surrogate"):
        DoriAdvFinetune.from_settings({"surrogate": "memorized"})
    with pytest.raises(Exception, match="surrogate_candidates"):
        DoriAdvFinetune.from_settings({"surrogate_candidates": 0})


def test_drop_protected_leaves_out_exactly_the_protected_captions(dummy_pipe):
    pipe = dummy_pipe
    with torch.no_grad():
        caps = pipe.encode_prompts(["a photo of a red cat", "a painting of a blue house"]).float()
        other = pipe.encode_prompts(["a green dog in the city", ""]).float()
    lat = torch.zeros(2, 4, 2, 2)
    batch = torch.cat([caps[1:], other, caps[:1]])
    for drop, want in ((True, [0.0, 1.0, 1.0, 0.0]), (False, None)):
        hook = _AdversarialRounds(pipe, DoriAdvFinetune.Config(drop_protected=drop), caps, other[1:], lat, lat, {})
        w = hook.sample_weights(None, None, batch, None, None)
        assert (w is None) if want is None else w.tolist() == want


@pytest.mark.slow  # the shipped world and SSCD: 4 samplings of 3 captions (about a minute on 2 busy cores)
def test_mitigated_surrogate_is_farther_from_the_memorized_image_than_the_base_one():
    from memorybench.metrics.sscd import SSCDEmbedder
    from memorybench.model.pipeline import PipelineAdapter
    from memorybench.tinyworld import load_world_data, world_path
    from memorybench.tinyworld.train import encode_latents

    pipe = PipelineAdapter.from_folder(world_path() / "pipeline", device="cpu", dtype="fp32", model_id="tinyworld-v1")
    world = load_world_data()
    rows = [5, 7, 12]  # memorized images the world copies from their captions
    caps = [world.memorized_prompts[i] for i in rows]
    src = world.train_images[world.memorized_indices[rows]]
    prot = encode_latents(pipe.vae, src, "cpu", batch=8) * float(getattr(pipe.vae.config, "scaling_factor", 1.0))
    settings = SamplerSettings(steps=25, guidance=3.0, height=64, width=64)  # tinyworld-v1's sampler
    seeds = [0, 1, 2]
    out = {name: surrogate_latents(pipe, caps, seeds, settings, DoriAdvFinetune.Config(**kw), prot)
           for name, kw in (("base", {}), ("mitigated", {"surrogate": "mitigated"}),
                            ("mitigated2", {"surrogate": "mitigated", "surrogate_candidates": 2}))}
    dist = {k: (v - prot).flatten(1).norm(dim=1) for k, v in out.items()}
    emb = SSCDEmbedder("default")
    e_src = emb.embed(src)
    sscd = {k: (emb.embed(np.asarray(pipe.decode(v))) * e_src).sum(1) for k, v in out.items()}
    assert sscd["base"].min() > 0.6, sscd  # the base model's surrogate IS the memorized image
    assert sscd["mitigated"].mean() < sscd["base"].mean() - 0.4, sscd
    assert bool((dist["mitigated"] > dist["base"]).all()), dist
    assert bool((dist["mitigated2"] >= dist["mitigated"]).all()), dist  # the farther of two candidates


@pytest.mark.slow  # builds the tiny world's 3,000 training images (tens of seconds on 2 busy cores)
def test_defence_suite_protects_the_worlds_memorized_images_and_scores_tinyworld_v1s_prompts():
    from memorybench.suites.data import load_suite_data
    from memorybench.suites.spec import load_suite

    data = load_suite_data(load_suite("tinyworld-defence-v1"))
    ref = load_suite_data(load_suite("tinyworld-v1"))
    world, ft = data.world, data.finetune_set
    assert ft.protected_captions == list(world.memorized_prompts)  # all 24, calibration prompts included
    assert np.array_equal(ft.dup_counts[ft.protected], world.memorized_dup_counts)
    assert sorted(set(ft.dup_counts[ft.protected].tolist())) == [100, 300] and int(ft.dup_counts.sum()) == world.n_samples
    assert np.array_equal(ft.protected_images, world.train_images[world.memorized_indices])
    # tinyworld-v1's evaluation prompts, seeds, calibration split and ground truth
    assert data.prompts == ref.prompts and data.seeds == ref.seeds
    assert data.calibration_prompts == ref.calibration_prompts and data.training.index == ref.training.index
    assert data.hashes["finetune_data"] == ft.sha256 != load_suite_data(load_suite("finetune-dup-v1")).finetune_set.sha256
