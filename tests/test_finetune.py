"""Suite fine-tunes and grad-projection: the loop learns, the projection is exact on the
protected inputs, fine-tunes are cached and undone bit-exactly, and the folder source
(Stable Diffusion recipe) reads a local image folder or says what is missing."""

import json
import os

import numpy as np
import pytest
import torch

from memorybench import METHODS
from memorybench.errors import ConfigError, DataError
from memorybench.api.method import FinetuneJob
from memorybench.suites.finetune import FinetuneRecipe
from tiny_finetune import GENERAL, PROTECTED, smooth_images, tiny_set
from memorybench.run.finetune import SuiteFinetune
from memorybench.api.method import MethodContext
from memorybench.methods.grad_projection import GradientProjection, energy_basis
from memorybench.model.pipeline import PipelineAdapter
from memorybench.suites.data import load_suite_data
from memorybench.suites.spec import suite_from_dict



@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return PipelineAdapter.dummy(seed=0)


def _unet_bytes(p: PipelineAdapter) -> dict[str, bytes]:
    return {k: v.detach().contiguous().view(torch.uint8).numpy().tobytes() for k, v in p.unet.state_dict().items()}


# -- the loop ---------------------------------------------------------------------------
def test_loss_falls_within_a_few_dozen_steps(pipe, tmp_path):
    recipe = FinetuneRecipe(steps=40, batch=8, lr=2e-3, warmup=4, caption_dropout=0.0)
    ft = SuiteFinetune(pipe, recipe, tiny_set(), tmp_path, progress=False)
    ctx = MethodContext()
    with ft.applied(METHODS.get("none")(), ctx):
        pass
    rec = ctx.report["finetune"]
    assert rec["loss_last_tenth"] < 0.8 * rec["loss_first_tenth"], rec["loss_curve"]
    for part in ("protected", "general"):  # the fixed-noise probe agrees
        assert rec["probe_loss_after"][part] < rec["probe_loss_before"][part]


def test_recipe_comes_from_suite_options_and_rejects_bad_values():
    assert FinetuneRecipe.from_options({"sscd_protocol": "default"}) is None
    r = FinetuneRecipe.from_options({"finetune_steps": 7, "finetune_lr": 0.5, "finetune_source": "tinyworld"})
    assert (r.steps, r.lr, r.batch) == (7, 0.5, FinetuneRecipe().batch)
    with pytest.raises(ConfigError, match="train"):
        FinetuneRecipe.from_options({"finetune_steps": 7, "finetune_train": "vae"})


# -- the projection: known answers ------------------------------------------------------


def test_misspelt_recipe_key_is_an_error_naming_it_and_one_rule_says_which_suites_fine_tune():
    """A typo in a finetune_* option must not silently train with the default."""
    from memorybench.suites.spec import load_suite, with_options

    with pytest.raises(ConfigError, match="unknown key 'lrr'. Did you mean 'lr'?"):
        FinetuneRecipe.from_options({"finetune_steps": 7, "finetune_lrr": 0.5})
    with pytest.raises(ConfigError, match="needs finetune_steps"):
        FinetuneRecipe.from_options({"finetune_lr": 0.5})
    suite = load_suite("finetune-dup-v1")
    assert suite.fine_tunes and suite.finetune_recipe().steps == suite.options["finetune_steps"]
    assert with_options(suite, {"finetune_steps": 0}).finetune_recipe().steps == 0  # "before fine-tuning" still fine-tunes
    assert not load_suite("tinyworld-v1").fine_tunes and not load_suite("sd-webster500-v1").fine_tunes


def test_energy_basis_keeps_the_smallest_rank_reaching_the_energy():
    gram = torch.diag(torch.tensor([1.0, 4.0, 0.0]))
    assert energy_basis(gram, 0.8).shape == (3, 1)  # 4 / 5 = 0.8
    assert energy_basis(gram, 0.81).shape == (3, 2)
    top = energy_basis(gram, 0.8)[:, 0].abs()
    assert torch.allclose(top, torch.tensor([0.0, 1.0, 0.0], dtype=top.dtype))


def _projected_step(project_update: bool, optimizer: str):
    """One projected step of a Linear(8 -> 5, bias) whose protected inputs span 3 dims."""
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(8, 5)
    protected = torch.randn(40, 3, generator=g) @ torch.randn(3, 8, generator=g)  # rank-3 inputs
    other = torch.randn(10, 8, generator=g)
    params = {"lin.weight": lin.weight, "lin.bias": lin.bias}
    job = FinetuneJob(recipe=FinetuneRecipe(), parameters=params, modules={"lin": lin}, protected_captions=["p"],
                      run_protected=lambda draws: lin(protected))
    method = GradientProjection(GradientProjection.Config(energy=0.999999, project_update=project_update))
    ctx = MethodContext()
    with torch.no_grad():
        before_p, before_o = lin(protected).clone(), lin(other).clone()
    hook = method.training_hook(None, ctx, job)
    opt = (torch.optim.AdamW(lin.parameters(), lr=0.05, weight_decay=0.1) if optimizer == "adamw"
           else torch.optim.SGD(lin.parameters(), lr=0.05, momentum=0.9))
    for step in range(3):
        loss = (lin(torch.cat([protected, other])) - 1.0).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        hook.before_step(step)
        opt.step()
        with torch.no_grad():
            hook.after_step(step)
    with torch.no_grad():
        return ctx.report["grad_projection"], before_p, lin(protected), before_o, lin(other)


def test_projected_step_leaves_the_protected_responses_unchanged():
    report, before_p, after_p, before_o, after_o = _projected_step(project_update=True, optimizer="adamw")
    assert report["basis_rank_per_layer"]["lin"] == [4, 9]  # rank 3 inputs + the bias direction, of 8 + 1
    assert torch.allclose(after_p, before_p, atol=1e-5)  # W x + b unchanged for x in span(U)
    assert (after_o - before_o).abs().max() > 1e-2  # other inputs still learn


def test_gradient_projection_alone_is_exact_for_sgd_but_not_for_adamw():
    _, before_p, after_p, _, _ = _projected_step(project_update=False, optimizer="sgd")
    assert torch.allclose(after_p, before_p, atol=1e-5)
    _, before_p, after_p, _, _ = _projected_step(project_update=False, optimizer="adamw")
    assert (after_p - before_p).abs().max() > 1e-3  # why project_update is on by default


# -- cache and reversibility ------------------------------------------------------------
def test_finetune_is_cached_reused_and_undone_bit_exactly(pipe, tmp_path):
    base = _unet_bytes(pipe)
    recipe = FinetuneRecipe(steps=6, batch=4, warmup=1)
    none, gp = METHODS.get("none")(), GradientProjection()
    ft = SuiteFinetune(pipe, recipe, tiny_set(), tmp_path, progress=False)

    ctx1 = MethodContext()
    with ft.applied(none, ctx1) as seconds1:
        tuned = _unet_bytes(pipe)
    assert tuned != base
    assert _unet_bytes(pipe) == base  # restored bit-identically
    assert ctx1.report["finetune"]["from_cache"] is False
    assert ft.cache_path(none).is_file()

    ctx2 = MethodContext()
    with ft.applied(none, ctx2) as seconds2:
        assert _unet_bytes(pipe) == tuned  # the cached weights, not a new fine-tune
    assert ctx2.report["finetune"]["from_cache"] is True and seconds2 == seconds1
    assert _unet_bytes(pipe) == base

    # a training method gets its own fine-tune; an inference method shares the plain one
    assert ft.cache_path(gp) != ft.cache_path(none)
    assert ft.cache_path(METHODS.get("scheduled-guidance")()) == ft.cache_path(none)
    ctx3 = MethodContext()
    with ft.applied(gp, ctx3):
        assert _unet_bytes(pipe) not in (base, tuned)
    assert "grad_projection" in ctx3.report and _unet_bytes(pipe) == base
    ctx4 = MethodContext()
    with ft.applied(gp, ctx4):  # cached: the method's own report comes back with it
        pass
    assert ctx4.report["finetune"]["from_cache"] and ctx4.report["grad_projection"] == ctx3.report["grad_projection"]


def test_weights_restored_when_the_fine_tune_fails(pipe, tmp_path):
    base = _unet_bytes(pipe)

    class Broken(GradientProjection):
        def training_hook(self, pipe_, ctx, job):
            with torch.no_grad():
                next(iter(job.parameters.values())).add_(1.0)
            raise RuntimeError("boom")

    ft = SuiteFinetune(pipe, FinetuneRecipe(steps=2, batch=2), tiny_set(), tmp_path, progress=False)
    with pytest.raises(RuntimeError, match="boom"):
        with ft.applied(Broken(), MethodContext()):
            pass
    assert _unet_bytes(pipe) == base


def test_validate_runs_a_training_method_inside_a_fine_tune():
    from memorybench.run.validate import validate_method

    report = validate_method(METHODS.get("grad-projection"), {"energy": 0.99})
    assert report.ok, report.lines()
    assert any("training hook runs inside a fine-tune" in line for line in report.lines())


# -- effect -----------------------------------------------------------------------------
def test_projection_keeps_the_protected_images_from_being_learned(pipe, tmp_path):
    """Same fine-tune with and without projection: the plain one fits the duplicated
    protected images (their denoising L2 falls), the projected one far less."""
    recipe = FinetuneRecipe(steps=30, batch=8, lr=2e-3, warmup=3, caption_dropout=0.0)
    ft = SuiteFinetune(pipe, recipe, tiny_set(dup=30), tmp_path, progress=False)
    drops = {}
    for method in (METHODS.get("none")(), GradientProjection(GradientProjection.Config(energy=0.99,
                                                                                       layers="linear+conv"))):
        ctx = MethodContext()
        with ft.applied(method, ctx):
            pass
        rec = ctx.report["finetune"]
        drops[method.name] = {k: rec["probe_loss_before"][k] - rec["probe_loss_after"][k] for k in ("protected", "general")}
    assert drops["none"]["protected"] > 0
    assert drops["grad-projection"]["protected"] < 0.5 * drops["none"]["protected"], drops


# -- suites -----------------------------------------------------------------------------
def test_training_method_on_a_suite_without_fine_tune_is_refused(tmp_path):
    from memorybench.run.request import RunOptions
    from memorybench.run.runner import run
    from memorybench.suites.spec import load_suite

    with pytest.raises(ConfigError, match="fine-tunes"):
        run(load_suite("smoke-v1"), "grad-projection", {}, RunOptions(cache_dir=str(tmp_path), progress=False))


@pytest.mark.slow  # builds the tiny world's 3,000 training images (tens of seconds on 2 busy cores)
def test_tinyworld_finetune_suite_data():
    from memorybench.suites.spec import load_suite

    suite = load_suite("finetune-dup-v1")
    data = load_suite_data(suite)
    ft_set = data.finetune_set
    assert data.prompts["memorized"] == ft_set.protected_captions and len(ft_set.protected) == 8
    assert set(ft_set.dup_counts[ft_set.protected]) == {suite.options["protected_dup"]}
    world = data.world
    assert set(data.prompts["general"]) <= set(world.heldout_prompts)
    train = data.training.images
    for prompt, row in data.training.index.items():  # sources index the combined training set
        assert np.array_equal(train[row], ft_set.images[ft_set.captions.index(prompt)])
    with pytest.raises(ConfigError, match="reads no local data"):
        load_suite_data(suite, {"images": "/tmp"})


def _folder_suite(**options):
    return suite_from_dict({
        "name": "finetune-folder-test", "version": 1, "description": "test", "model": "dummy",
        "data": "finetune-dup", "sampler": {"sampler": "ddim", "steps": 3, "guidance": 7.5, "height": 16, "width": 16},
        "prompt_sets": [{"name": "memorized", "seeds": 2}, {"name": "general", "seeds": 1, "limit": 3}],
        "metrics": ["webster-copy", "clip-score"], "summary": ["sscd_mem", "clip_gen"],
        "options": {"finetune_source": "folder", "protected_count": 2, "protected_dup": 10, "protected_seed": 0,
                    "finetune_steps": 4, "finetune_batch": 4, "finetune_warmup": 1,
                    "sscd_protocol": "default", "clip_arch": "tinyworld", "copy_threshold": 0.5, **options},
    })


def _write_folder(root, captions, sidecar=False, size=24):
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    images = smooth_images(len(captions), 5, size=size)
    lines = []
    for i, (img, cap) in enumerate(zip(images, captions)):
        Image.fromarray(img).save(root / f"img{i:02d}.png")
        if sidecar:
            (root / f"img{i:02d}.txt").write_text(cap)
        lines.append(json.dumps({"file_name": f"img{i:02d}.png", "text": cap}))
    if not sidecar:
        (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return images


def test_folder_source_reads_images_and_captions(tmp_path):
    from memorybench.tinyworld import world_path

    caps = PROTECTED + GENERAL[:4]
    _write_folder(tmp_path / "meta", caps)
    _write_folder(tmp_path / "side", caps, sidecar=True)
    paths = {"clip_weights": str(world_path() / "clip")}
    a = load_suite_data(_folder_suite(), {"images": str(tmp_path / "meta"), **paths})
    b = load_suite_data(_folder_suite(), {"images": str(tmp_path / "side"), **paths})
    ft_set = a.finetune_set
    assert ft_set.images.shape == (6, 16, 16, 3)  # resized to the sampler's resolution
    assert len(a.prompts["memorized"]) == 2 and len(a.prompts["general"]) == 3
    assert a.prompts == b.prompts and a.finetune_set.captions == b.finetune_set.captions
    assert sorted(ft_set.dup_counts.tolist()) == [1, 1, 1, 1, 10, 10]
    rec = a.records[a.prompts["memorized"][0]]
    assert np.array_equal(a.ground_truth.images(rec.laion_index)[0], ft_set.images[rec.laion_index])


def test_folder_source_says_what_is_missing(tmp_path):
    from memorybench.tinyworld import world_path

    paths = {"clip_weights": str(world_path() / "clip")}
    with pytest.raises(DataError, match="--data images=PATH"):
        load_suite_data(_folder_suite(), paths)
    with pytest.raises(DataError, match="does not exist"):
        load_suite_data(_folder_suite(), {"images": str(tmp_path / "nope"), **paths})
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no images"):
        load_suite_data(_folder_suite(), {"images": str(tmp_path / "empty"), **paths})
    _write_folder(tmp_path / "nocap", PROTECTED, sidecar=True)
    os.remove(tmp_path / "nocap" / "img01.txt")
    with pytest.raises(DataError, match="no caption for 'img01.png'"):
        load_suite_data(_folder_suite(), {"images": str(tmp_path / "nocap"), **paths})
    _write_folder(tmp_path / "same", ["a photo of a cat"] * 3)
    with pytest.raises(DataError, match="distinct captions"):
        load_suite_data(_folder_suite(protected_count=3), {"images": str(tmp_path / "same"), **paths})


def test_folder_suite_runs_end_to_end_with_a_cached_fine_tune(tmp_path):
    """The SD recipe's path on tiny synthetic data: fine-tune the (dummy) model, generate,
    score SSCD to the protected images and CLIP; a second run reuses everything."""
    from memorybench.run.request import RunOptions
    from memorybench.run.runner import run
    from memorybench.tinyworld import world_path

    _write_folder(tmp_path / "imgs", PROTECTED + GENERAL[:4])
    opts = RunOptions(cache_dir=str(tmp_path / "cache"), progress=False,
                      data_paths={"images": str(tmp_path / "imgs"), "clip_weights": str(world_path() / "clip")})
    first = run(_folder_suite(), "none", {}, opts)
    rec = first["method"]["report"]["finetune"]
    assert rec["from_cache"] is False and rec["recipe"]["steps"] == 4
    assert first["cost"]["preparation_seconds"] >= rec["seconds"] > 0
    assert -1.0 <= first["summary"]["sscd_mem"] <= 1.0 and "clip_gen" in first["summary"]
    assert len(list((tmp_path / "cache" / "finetune").glob("*.safetensors"))) == 1
    second = run(_folder_suite(), "none", {}, opts)
    assert second["cost"]["images_generated"] == 0 and second["summary"] == first["summary"]
    # another recipe is another model: nothing is reused
    third = run(_folder_suite(finetune_steps=5), "none", {}, opts)
    assert third["cost"]["images_generated"] == first["cost"]["images_generated"]


@pytest.mark.slow  # two fine-tunes of the tiny world, 300 steps each (minutes on 2 cores)
def test_projection_on_the_tiny_world_keeps_generations_off_the_protected_photos(tmp_path):
    """finetune-dup-v1's data with a shorter recipe: the plain fine-tune's generations of
    the protected captions move towards the protected photos (SSCD); with grad-projection
    at its defaults they stay at least 30% further. Relative to the plain fine-tune,
    measured in the same test."""
    from memorybench.metrics.sscd import SSCDEmbedder
    from memorybench.suites.spec import load_suite
    from memorybench.tinyworld import world_path

    suite = load_suite("finetune-dup-v1")
    data = load_suite_data(suite)
    ft_set = data.finetune_set
    pipe = PipelineAdapter.from_folder(world_path() / "pipeline", model_id="tinyworld-v1")
    ft = SuiteFinetune(pipe, FinetuneRecipe(steps=300, batch=32, lr=1e-3, warmup=20), ft_set, tmp_path, progress=False)
    embedder = SSCDEmbedder("default", progress=False)
    sources = embedder.embed(ft_set.protected_images)
    prompts = [c for c in ft_set.protected_captions for _ in range(2)]
    seeds = [k for _ in ft_set.protected_captions for k in range(2)]
    sscd = {}
    for method in (METHODS.get("none")(), GradientProjection()):
        with ft.applied(method, MethodContext()):
            images = pipe.generate(prompts, seeds, suite.sampler)
        sims = np.einsum("nd,nd->n", embedder.embed(images), np.repeat(sources, 2, axis=0))
        sscd[method.name] = float(sims.mean())
    assert sscd["none"] > 0.1, sscd  # the plain fine-tune copies (the base model scores about 0)
    assert sscd["grad-projection"] < 0.7 * sscd["none"], sscd
