"""The tiny world: deterministic data, a short training run whose loss falls, the shipped folder.

No test retrains the shipped world.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from memorybench.datasets.tinyworld import generator as gen
from memorybench.tinyworld import load_finetune_data, world_path
from memorybench.tinyworld.model import TinyWorldConfig



@pytest.fixture(scope="module")
def small_world():
    return gen.build_world_data(0, n_general=60)


def test_generator_is_deterministic(small_world):
    again = gen.build_world_data(0, n_general=60)
    assert again.sha256() == small_world.sha256()
    other = gen.build_world_data(1, n_general=60)
    assert other.sha256() != small_world.sha256()


def test_generator_shapes_and_labels(small_world):
    d = small_world
    t = len(d.train_captions)
    assert d.train_images.shape == (t, 64, 64, 3) and d.train_images.dtype == np.uint8
    assert d.train_dup_counts.shape == (t,) and len(d.train_kind) == t
    assert len(d.memorized_prompts) == len(d.memorized_indices) == gen.N_MEMORIZED
    assert [d.train_captions[i] for i in d.memorized_indices] == d.memorized_prompts
    assert all(d.train_kind[i] == "memorized" for i in d.memorized_indices)
    assert set(d.memorized_dup_counts.tolist()) == set(d.dup_rates)
    assert len(set(d.memorized_prompts)) == len(d.memorized_prompts)
    # unique images, held-out captions never trained on
    flat = d.train_images.reshape(t, -1)
    assert len({row.tobytes() for row in flat}) == t
    assert not set(d.heldout_prompts) & set(d.train_captions)
    assert d.heldout_images.shape == (len(d.heldout_prompts), 64, 64, 3)


def test_finetune_set_is_disjoint_from_world(small_world):
    ft = load_finetune_data(0)
    assert ft.protected_images.shape[1:] == (64, 64, 3)
    assert (ft.dup_counts[: len(ft.protected_captions)] == ft.protected_dup).all()
    world_bytes = {x.tobytes() for x in small_world.train_images}
    assert not any(x.tobytes() in world_bytes for x in ft.protected_images)
    assert not set(ft.protected_captions) & set(small_world.memorized_prompts)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_short_training_loss_falls(tmp_path, prediction_type):
    import torch

    from memorybench.tinyworld.model import build_text_encoder, build_tokenizer, build_unet, tiny_test_config
    from memorybench.tinyworld.train import train_unet

    torch.manual_seed(0)
    cfg = tiny_test_config()
    cfg.unet_steps = 60
    cfg.batch = 16
    cfg.prediction_type = prediction_type
    data = gen.build_world_data(0, n_general=40)
    tok = build_tokenizer(data.vocabulary(), cfg.max_length)
    unet = build_unet(cfg)
    te = build_text_encoder(cfg, len(tok))
    # fixed random "latents": the loss must fall on them within a few dozen steps
    g = torch.Generator().manual_seed(0)
    size = unet.config.sample_size
    latents = torch.randn(len(data.train_captions), cfg.latent_channels, size, size, generator=g) * 0.5
    log_path = tmp_path / "log.jsonl"
    recs = []
    train_unet(unet, te, tok, latents, data, cfg, "cpu", recs.append, progress=False)
    losses = [r["loss"] for r in recs if r["phase"] == "unet"]
    assert len(losses) >= 2
    assert losses[-1] < losses[0]
    del log_path


def test_shipped_world_loads_offline_and_matches_manifest():
    import hashlib

    import torch
    from diffusers import StableDiffusionPipeline

    folder = world_path()
    man_path = folder / "manifest.json"
    assert man_path.exists(), "the tiny world must ship in the repo"
    man = json.loads(man_path.read_text())
    for rel, digest in man["files"].items():
        p = folder / rel
        assert p.exists(), rel
        assert hashlib.sha256(p.read_bytes()).hexdigest() == digest, rel
    pipe = StableDiffusionPipeline.from_pretrained(
        folder / "pipeline", local_files_only=True, safety_checker=None, requires_safety_checker=False, dtype=torch.float32
    )
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size
    blocks = [m for n, m in pipe.unet.named_modules() if n.endswith("attn2")]
    assert blocks, "cross-attention blocks expected"
    ffn = [m for n, m in pipe.unet.named_modules() if n.endswith("ff.net.2")]
    assert ffn and all(isinstance(m, torch.nn.Linear) for m in ffn)
    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert total <= 15 * 1024 * 1024
    out = pipe(["a red circle on a blue background"], num_inference_steps=2, guidance_scale=7.5, output_type="np",
               generator=torch.Generator().manual_seed(0)).images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()


def test_shipped_clip_loads():
    from memorybench.tinyworld.clip import clip_scores, load_tiny_clip

    assert (world_path() / "clip" / "config.json").exists(), "the tiny CLIP must ship in the repo"
    model, tokenize_fn, info = load_tiny_clip()
    ids = tokenize_fn(["a red circle on a blue background", "a photo of the x"])
    assert ids.dtype.is_floating_point is False and ids.shape[0] == 2
    img = np.zeros((2, 64, 64, 3), np.uint8)
    s = clip_scores(model, tokenize_fn, img, ["a red circle on a blue background"] * 2)
    assert s.shape == (2,) and np.isfinite(s).all()


@pytest.mark.slow
def test_train_tinyworld_end_to_end_tiny(tmp_path):
    """The whole recipe on a toy config: folders, manifest hashes, offline load, resume."""
    import hashlib

    import torch
    from diffusers import StableDiffusionPipeline

    from memorybench.tinyworld.model import tiny_test_config
    from memorybench.tinyworld.train import train_tinyworld

    cfg = tiny_test_config()
    out = train_tinyworld(tmp_path / "w", cfg, progress=False, device="cpu")
    man = json.loads((out / "manifest.json").read_text())
    assert man["steps"]["unet"] == cfg.unet_steps
    for rel, digest in man["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest
    pipe = StableDiffusionPipeline.from_pretrained(
        out / "pipeline", local_files_only=True, safety_checker=None, requires_safety_checker=False, dtype=torch.float32
    )
    assert pipe.tokenizer.model_max_length == cfg.max_length
    # a second call finds every phase done and only rewrites the folders
    train_tinyworld(tmp_path / "w", cfg, progress=False, device="cpu")
    assert (out / "manifest.json").exists()
    _check_install(out, tmp_path / "shipped")


def _check_install(run, target):
    """`memorybench tinyworld install`: the run's files, each phase's wall time, fresh hashes;
    a run whose files changed since training is refused."""
    import hashlib

    from memorybench.cli import main
    from memorybench.errors import ConfigError
    from memorybench.tinyworld.install import install_world

    (target / "pipeline").mkdir(parents=True)
    (target / "pipeline" / "stale.bin").write_bytes(b"the previous world")
    (target / "manifest.json").write_text(json.dumps({"measured_eval": {"by_guidance": {}}}))
    assert main(["tinyworld", "install", str(run), "--target", str(target)]) == 0
    run_man, man = json.loads((run / "manifest.json").read_text()), json.loads((target / "manifest.json").read_text())
    assert man["files"] == run_man["files"] and not (target / "pipeline" / "stale.bin").exists()
    for rel, digest in man["files"].items():
        assert hashlib.sha256((target / rel).read_bytes()).hexdigest() == digest
    assert {k: v["wall_s"] for k, v in man["phases"].items()} == {
        k: run_man["wall_time_s"][f"{k}_s"] for k in ("vae", "unet", "clip")}
    assert "measured_eval" not in man and man["config"] == run_man["config"]
    (run / "clip" / "model.safetensors").write_bytes(b"edited after training")
    with pytest.raises(ConfigError, match=r"changed since training: clip/model\.safetensors"):
        install_world(run, target)


def test_weight_files_differing_compares_the_world_folders_only():
    """How a retrained world is compared with the shipped one: weights and configs, not the loss log."""
    from memorybench.tinyworld.install import weight_files_differing

    shipped = {"files": {"pipeline/unet/w.safetensors": "a", "clip/model.safetensors": "b", "train_log.jsonl": "c"}}
    assert weight_files_differing(shipped, json.loads(json.dumps(shipped))) == []
    retrained = {"files": {"pipeline/unet/w.safetensors": "a", "clip/model.safetensors": "B", "train_log.jsonl": "C",
                           "pipeline/vae/extra.json": "d"}}
    assert weight_files_differing(retrained, shipped) == ["clip/model.safetensors", "pipeline/vae/extra.json"]


@pytest.mark.slow
def test_cli_train_applies_recipe_changes(tmp_path, capsys):
    """`memorybench tinyworld train --set ...` trains the changed recipe and records it."""
    from memorybench.cli import main
    from memorybench.tinyworld.model import tiny_test_config

    tiny = tiny_test_config().to_dict()
    sets = [f"{k}={json.dumps(v)}" for k, v in tiny.items()] + ["prediction_type=epsilon"]
    assert main(["tinyworld", "train", "--out", str(tmp_path / "w"), "--no-progress", *sum([["--set", s] for s in sets], [])]) == 0
    man = json.loads((tmp_path / "w" / "manifest.json").read_text())
    assert man["config"] == {**tiny, "prediction_type": "epsilon"}
    sched = json.loads((tmp_path / "w" / "pipeline" / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == "epsilon"
    assert "recipe changes from the shipped world" in capsys.readouterr().out


def _pipe_with_scheduler(sched):
    """The dummy pipeline, reporting ``sched``'s config (its prediction type) as its own."""
    from memorybench.model.pipeline import PipelineAdapter

    pipe = PipelineAdapter.dummy(seed=0)
    object.__setattr__(pipe, "_base_scheduler_config", dict(sched.config))
    return pipe


def test_v_prediction_target_converts_back_to_the_noise():
    """diffusion_target (training) and PipelineAdapter.to_epsilon (detectors, methods) agree:
    the v target of a known (x0, noise) pair maps back to exactly that noise."""
    import torch
    from diffusers import DDIMScheduler

    from memorybench.tinyworld.model import TinyWorldConfig, scheduler_config
    from memorybench.tinyworld.train import diffusion_target

    sched = DDIMScheduler(**scheduler_config(TinyWorldConfig(prediction_type="v_prediction")))
    pipe = _pipe_with_scheduler(sched)
    assert pipe.prediction_type == "v_prediction"
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    for t in (1, 500, 999):
        a = sched.alphas_cumprod[t]
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        v = diffusion_target(x0, noise, a, "v_prediction")
        torch.testing.assert_close(pipe.to_epsilon(v, x_t, t, sched), noise, rtol=1e-4, atol=1e-4)
        assert not torch.allclose(v, noise, atol=1e-2)  # the conversion is not the identity
    with pytest.raises(ValueError, match="prediction_type"):
        TinyWorldConfig(prediction_type="sample")


def test_default_config_reproduces_the_shipped_world():
    """`memorybench tinyworld train` uses TinyWorldConfig(): it must be the shipped recipe."""
    from memorybench.tinyworld.model import TinyWorldConfig

    man = json.loads((world_path() / "manifest.json").read_text())
    # the shipped manifest predates data versions: every other field must be there and equal
    assert set(TinyWorldConfig().to_dict()) - set(man["config"]) <= {"data_version"}
    assert TinyWorldConfig.from_dict(man["config"]) == TinyWorldConfig()
    assert man["config"]["prediction_type"] == "v_prediction"
    sched = json.loads((world_path() / "pipeline" / "scheduler" / "scheduler_config.json").read_text())
    assert sched["prediction_type"] == man["config"]["prediction_type"]


def test_regenerated_data_is_what_the_world_was_trained_on():
    """The suite regenerates the training set from the seed: it must be byte-identical."""
    from memorybench.tinyworld import load_world_data

    man = json.loads((world_path() / "manifest.json").read_text())
    assert load_world_data().sha256() == man["data_sha256"]


def test_data_version_2_names_the_background_only_sometimes(small_world):
    """Data v2: most captions leave the background unsaid (one caption, many scenes), muted colours."""
    assert all("background" in c for c, k in zip(small_world.train_captions, small_world.train_kind) if k == "general")
    v2 = gen.build_world_data(0, n_general=60, data_version=2)
    assert v2.sha256() != small_world.sha256() and v2.memorized_prompts == small_world.memorized_prompts
    general = [c for c, k in zip(v2.train_captions, v2.train_kind) if k == "general"]
    assert 0.1 < np.mean(["background" in c for c in general]) < 0.6
    assert not set(v2.heldout_prompts) & set(v2.train_captions)
    scenes = [gen._sample_scene(np.random.default_rng(i), 1, data_version=2) for i in range(200)]
    assert all(s.caption.endswith("background") == s.named for s in scenes)
    assert {s.background for s in scenes if not s.named} == set(gen.BACKGROUND_COLORS)  # any colour when unsaid
    spread = lambda v: np.ptp([gen.background_rgb(b, v).mean() for b in gen.BACKGROUND_COLORS])
    assert spread(2) == pytest.approx(spread(1) / 2, abs=1)
    with pytest.raises(ValueError, match="data_version"):
        gen.build_world_data(0, n_general=10, data_version=6)
    with pytest.raises(ValueError, match="data_version"):
        TinyWorldConfig(data_version=6)


def test_data_version_3_keeps_v1_captions_with_v2_colours(small_world):
    """Data v3 changes only the pixels of v1's backgrounds: the same captions, muted colours."""
    v1 = small_world  # data version 1
    v3 = gen.build_world_data(0, n_general=60, data_version=3)
    assert v3.train_captions == v1.train_captions and v3.heldout_prompts == v1.heldout_prompts
    mem = v1.memorized_indices
    assert np.array_equal(v3.train_images[mem], v1.train_images[mem])
    assert not np.array_equal(v3.train_images, v1.train_images)
    for b in gen.BACKGROUND_COLORS:
        assert np.array_equal(gen.background_rgb(b, 3), gen.background_rgb(b, 2))


@pytest.fixture(scope="module")
def small_world_v4():
    return gen.build_world_data(0, n_general=60, data_version=4)


def test_data_version_4_never_names_the_background_and_makes_it_gray(small_world_v4):
    v4 = small_world_v4
    general = [c for c, k in zip(v4.train_captions, v4.train_kind) if k == "general"]
    assert not any("background" in c for c in general + v4.heldout_prompts)
    assert {tuple(gen.background_rgb(b, 4)) for b in gen.BACKGROUND_COLORS} == {(128.0, 128.0, 128.0)}


def test_data_version_5_memorizes_colour_crops_in_place_of_the_grey_camera_and_horse(small_world_v4):
    from memorybench.metrics.sscd import SSCDEmbedder

    v4 = small_world_v4
    v5 = gen.build_world_data(0, n_general=60, data_version=5)
    swapped = sorted(gen.MEMORIZED_CROP_SWAPS[5])
    assert [v4.photo_crops[i][0] for i in swapped] == ["camera", "horse"]
    # only the two memorized images change; captions, rates and general images stay v4's
    assert v5.train_captions == v4.train_captions
    assert np.array_equal(v5.train_dup_counts, v4.train_dup_counts)
    assert np.array_equal(v5.train_images[gen.N_MEMORIZED:], v4.train_images[gen.N_MEMORIZED:])
    changed = [i for i in range(gen.N_MEMORIZED) if not np.array_equal(v5.train_images[i], v4.train_images[i])]
    assert changed == swapped
    for i in swapped:  # the new crops are colour photos: channels differ, unlike the grey ones
        x = v5.train_images[i].astype(float)
        assert np.abs(x - x.mean(-1, keepdims=True)).mean() > 30
    # and still distinct from every other crop, the memorized set's rule
    crops = list(v5.photo_crops) + list(gen.PHOTO_CROPS[gen.N_MEMORIZED:])
    e = SSCDEmbedder("default").embed(np.stack([gen.photo_crop(c) for c in crops]))
    sim = e @ e.T
    for i in swapped:
        assert np.delete(sim[i], i).max() < 0.40


def test_to_epsilon_takes_the_scaled_model_input_of_sigma_samplers():
    """Euler keeps x = x0 + sigma * noise; the UNet sees x / sqrt(sigma^2 + 1), which is the
    variance-preserving x_t that the v -> epsilon conversion needs."""
    import torch
    from diffusers import EulerDiscreteScheduler

    from memorybench.tinyworld.model import TinyWorldConfig, scheduler_config
    from memorybench.tinyworld.train import diffusion_target

    cfg = scheduler_config(TinyWorldConfig(prediction_type="v_prediction"))
    for ddim_only in ("clip_sample", "clip_sample_range", "set_alpha_to_one"):
        cfg.pop(ddim_only)
    sched = EulerDiscreteScheduler(**cfg)
    sched.set_timesteps(10)
    pipe = _pipe_with_scheduler(sched)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    t = sched.timesteps[3]
    sigma = sched.sigmas[3]
    model_in = sched.scale_model_input(x0 + sigma * noise, t)
    a = sched.alphas_cumprod[int(t)]
    v = diffusion_target(x0, noise, a, "v_prediction")
    torch.testing.assert_close(pipe.to_epsilon(v, model_in, t, sched), noise, rtol=1e-3, atol=1e-3)
