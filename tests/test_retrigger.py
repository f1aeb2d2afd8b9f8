"""The re-trigger stage: the attack stays in its budget, finds a hidden image, never lowers copying."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import yaml

from memorybench.api.method import Method, MethodContext, apply_method
from memorybench.errors import ConfigError
from memorybench.run import retrigger as R
from memorybench.suites.spec import load_suite, suite_from_dict


def _suite_with(options):
    spec = load_suite("tinyworld-robust-v1").to_dict()
    spec["options"] = options
    return suite_from_dict(spec)


def test_options_are_read_from_the_suite_and_bad_ones_rejected():
    opts = R.options_of(load_suite("tinyworld-robust-v1"))
    assert opts.objective == "denoise-target" and opts.norm == "relative-l2" and opts.budget == 0.25
    assert R.options_of(load_suite("tinyworld-v1")) is None  # no stage
    with pytest.raises(ConfigError, match="unknown"):
        R.options_of(_suite_with({"retrigger_budgett": 0.1}))
    with pytest.raises(ConfigError, match="objective"):
        R.options_of(_suite_with({"retrigger_objective": "guess"}))


class _None(Method):
    name = "test-none"
    kind = "inference"


@pytest.mark.parametrize("budget", [0.0, 0.05])
def test_search_stays_inside_the_ball_and_leaves_bos_alone(dummy_pipe, budget):
    from memorybench.model.sampling import SamplerSettings

    settings = SamplerSettings(steps=2, guidance=5.0, height=16, width=16)
    image = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    target = R.target_latent_of(dummy_pipe, image)
    opts = R.RetriggerOptions(budget=budget, steps=2, lr=0.5, batch=1)
    base = dummy_pipe.encode_prompts(["a red circle"])
    with torch.enable_grad():
        rec = R.attack_prompt(dummy_pipe, _None(), "a red circle", settings, opts, target, seed=0)
    found = rec["embedding"]
    assert torch.equal(found[:, 0], base[:, 0])  # BOS untouched
    assert rec["delta_rel"] <= budget + 1e-5
    if budget == 0:
        assert rec["unet_calls"] == 0 and torch.equal(found, base)
    else:  # lr 0.5 overshoots the ball at once: the projection puts it back on the boundary
        assert rec["delta_rel"] == pytest.approx(budget, rel=1e-3)
        assert rec["unet_calls"] == 2 and rec["loss_last"] is not None


class ExactPromptFilter(Method):
    """A toy mitigation that severs only the prompt path: when the text condition is exactly
    the encoding of the prompt, it is replaced by the empty prompt's; anything else passes."""

    name = "test-exact-filter"
    kind = "inference"

    def prompt_embeds(self, pipe, cond, uncond, latents, settings, prompts):
        exact = pipe.encode_prompts(prompts)
        same = torch.tensor([torch.equal(cond[i], exact[i]) for i in range(len(prompts))])
        return torch.where(same[:, None, None].to(cond.device), uncond, cond)


def _tiny(prompts=2, seeds=2, steps=10):
    from memorybench.suites.data import load_suite_data

    suite = load_suite("tinyworld-robust-v1")
    suite = replace(suite, sampler=replace(suite.sampler, steps=steps),
                    options={**suite.options, "retrigger_steps": 3, "retrigger_batch": 2})
    data = load_suite_data(load_suite("tinyworld-v1"))
    data.prompts = {"memorized": data.prompts["memorized"][:prompts]}
    data.seeds = {"memorized": list(range(seeds))}
    return suite, data


@pytest.mark.slow
def test_attack_recovers_an_image_the_method_only_hides(tmp_path):
    from memorybench.metrics.sscd import SSCDEmbedder
    from memorybench.run.request import RunOptions
    from memorybench.run.runner import load_model

    suite, data = _tiny(prompts=1, seeds=2, steps=25)
    pipe = load_model(suite, RunOptions())
    method = ExactPromptFilter()
    (prompt,), seeds = data.prompts["memorized"], data.seeds["memorized"]
    embedder = SSCDEmbedder("default")
    src = embedder.embed([data.source_image(prompt)])[0]
    copied = float((embedder.embed(pipe.generate([prompt] * 2, seeds, suite.sampler)) @ src).max())
    with apply_method(method, pipe, MethodContext(settings=suite.sampler)):
        hidden_images = pipe.generate([prompt] * 2, seeds, suite.sampler, method=method)
    hidden = float((embedder.embed(hidden_images) @ src).max())
    cols = R.retrigger_metrics(pipe, suite, data, method, {prompt: hidden}, 0.5, tmp_path / "cache")
    got = cols["retrigger_sscd_mem"]
    # without the filter the prompt copies; the filter hides the image from its prompt ...
    assert copied > 0.6 and hidden < copied - 0.3, (copied, hidden)
    # ... and an embedding a hair away from the prompt's (the filter no longer matches) brings it back
    assert got.protocol["attacked_only_mean"] > copied - 0.1, (got, copied)
    assert got.value > hidden + 0.3
    assert cols["retrigger_copy_rate"].value == 1.0
    assert 0 < cols["retrigger_delta_rel"].value <= 0.25 + 1e-6
    # the same inputs are served from the cache with the same numbers
    again = R.retrigger_metrics(pipe, suite, data, method, {prompt: hidden}, 0.5, tmp_path / "cache")
    assert again["retrigger_sscd_mem"].protocol["from_cache"] is True
    assert again["retrigger_sscd_mem"].per_prompt == got.per_prompt


@pytest.mark.slow
def test_none_run_never_scores_lower_under_attack(tmp_path):
    """Through the runner: for ``none`` the attack starts at the prompt, so it cannot lower copying."""
    from memorybench.run.request import RunOptions
    from memorybench.run.runner import run

    spec = load_suite("tinyworld-robust-v1").to_dict()
    spec["name"] = "tinyworld-robust-reduced"
    spec["prompt_sets"] = [{"name": "memorized", "seeds": 2, "limit": 3}, {"name": "general", "seeds": 1, "limit": 2}]
    spec["options"].update(retrigger_steps=4)
    spec["summary"] = ["sscd_mem", "retrigger_sscd_mem", "retrigger_copy_rate"]
    path = tmp_path / "reduced.yaml"
    path.write_text(yaml.safe_dump(spec))
    suite = load_suite(str(path))
    result = run(suite, "none", None, RunOptions(cache_dir=str(tmp_path / "cache"), progress=False))
    m = result["metrics"]
    assert result["summary"]["retrigger_sscd_mem"] >= result["summary"]["sscd_mem"]
    for p, v in m["sscd_mem"]["per_prompt"].items():
        assert m["retrigger_sscd_mem"]["per_prompt"][p] >= v
    assert m["retrigger_sscd_mem"]["protocol"]["attack"]["steps"] == 4
    assert m["retrigger_unet_calls"]["value"] == 4 + suite.sampler.steps


def test_report_draws_hidden_vs_removed_only_when_the_attack_ran(tmp_path):
    from memorybench.results.report import _hidden_plot

    def metric(v):
        return {"value": v, "ci95": [v - 0.05, v + 0.05], "higher_is_better": False}

    entries = [{"result": {"metrics": {"sscd_mem": metric(0.75), "retrigger_sscd_mem": metric(0.78)}}},
               {"result": {"metrics": {"sscd_mem": metric(0.30), "retrigger_sscd_mem": metric(0.70)}}}]
    html = _hidden_plot(entries, ["none", "hider"], tmp_path)
    assert "hidden.png" in html and (tmp_path / "hidden.png").stat().st_size > 1000
    assert _hidden_plot([{"result": {"metrics": {"sscd_mem": metric(0.75)}}}], ["none"], tmp_path / "x") == ""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sd15", "sd21"])
def test_attack_runs_through_nemo_on_stable_diffusion_shaped_models(kind):
    """Random-weight SD 1.5 / 2.1 architectures (epsilon and v-prediction): the search stays in
    its ball and the found embedding generates through a per-prompt method's hooks."""
    from memorybench.methods.nemo import Nemo, value_layers
    from memorybench.model.pipeline import PipelineAdapter
    from memorybench.model.random_sd import build_random_sd
    from memorybench.model.sampling import SamplerSettings

    pipe = PipelineAdapter(build_random_sd(kind), f"random-{kind}", "")
    settings = SamplerSettings(steps=3, guidance=7.5, height=64, width=64)
    image = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    method = Nemo(Nemo.Config(samples=2, refine=False, max_rounds=2, ssim_threshold=-1.0))  # every prompt "memorized"
    before = pipe.state_sha256()
    with apply_method(method, pipe, MethodContext(settings=settings)):
        assert value_layers(pipe)
        with torch.enable_grad():
            rec = R.attack_prompt(pipe, method, "a photo", settings, R.RetriggerOptions(steps=2, batch=1),
                                  R.target_latent_of(pipe, image), seed=0)
        assert "a photo" in method._records  # the method saw the prompt before the search
        assert 0 < rec["delta_rel"] <= 0.25 + 1e-5 and np.isfinite(rec["loss_last"])
        images = pipe.generate(["a photo"], [0], settings, method=R._FoundEmbedding(method, rec["embedding"]))
    assert images.shape == (1, 64, 64, 3)
    assert pipe.state_sha256() == before


class _StubData:
    """The few fields of SuiteData the attack reads: memorized prompts with a source image each."""

    def __init__(self, prompts):
        rng = np.random.default_rng(0)
        self.prompts = {"memorized": prompts}
        self.seeds = {"memorized": [0]}
        self.calibration_prompts = []
        self._images = {p: (rng.random((16, 16, 3)) * 255).astype(np.uint8) for p in prompts}

    def source_image(self, prompt):
        return self._images.get(prompt)


def test_a_killed_attack_resumes_at_the_first_unfinished_prompt(dummy_pipe, tmp_path, monkeypatch):
    suite = load_suite("tinyworld-robust-v1")
    suite = replace(suite, sampler=replace(suite.sampler, steps=2, height=16, width=16),
                    options={**suite.options, "retrigger_steps": 2, "retrigger_batch": 1})
    data = _StubData(["a red circle", "a blue square", "a green star"])
    opts = R.options_of(suite)
    cache = tmp_path / "cache"
    calls = []
    real = R.attack_prompt

    def counting(pipe, method, prompt, *args, **kwargs):
        calls.append(prompt)
        if len(calls) == 3 and kill["armed"]:
            raise KeyboardInterrupt  # the run is stopped while the third prompt is attacked
        return real(pipe, method, prompt, *args, **kwargs)

    kill = {"armed": True}
    monkeypatch.setattr(R, "attack_prompt", counting)
    with pytest.raises(KeyboardInterrupt):
        R.attack_all(dummy_pipe, suite, data, _None(), opts, cache)
    kill["armed"] = False
    prompts = data.prompts["memorized"]
    calls.clear()
    _, images, records, from_cache = R.attack_all(dummy_pipe, suite, data, _None(), opts, cache)
    assert calls == [prompts[2]] and not from_cache  # only the unfinished prompt is attacked again
    # a clean run from scratch finds the same embeddings and images
    calls.clear()
    _, fresh_images, fresh_records, _ = R.attack_all(dummy_pipe, suite, data, _None(), opts, tmp_path / "other")
    assert len(calls) == 3 and np.array_equal(images, fresh_images)
    assert [r["delta_rel"] for r in records] == [r["delta_rel"] for r in fresh_records]
    # a cached prompt whose bytes changed on disk is noticed and attacked again
    victim = sorted((cache / R.CACHE_FOLDER).rglob("0001.npz"))[0]
    victim.write_bytes(victim.read_bytes()[:-10])
    calls.clear()
    _, again, _, _ = R.attack_all(dummy_pipe, suite, data, _None(), opts, cache)
    assert calls == [prompts[1]] and np.array_equal(again, fresh_images)
    calls.clear()
    assert R.attack_all(dummy_pipe, suite, data, _None(), opts, cache)[3] is True and calls == []


class _EveryHook(Method):
    """A toy method that acts through the initial noise and the guidance combination only."""

    name = "test-every-hook"
    kind = "inference"

    def adjust_initial_latents(self, pipe, latents, cond, uncond, settings):
        return latents * 0.5

    def combine_guidance(self, pipe, step, t, prediction, guidance):
        return prediction.uncond + 0.5 * (prediction.cond - prediction.uncond)


def test_generation_from_the_found_embedding_applies_every_hook_of_the_method(dummy_pipe):
    from memorybench.model.sampling import SamplerSettings

    settings = SamplerSettings(steps=2, guidance=5.0, height=16, width=16)
    method, prompt = _EveryHook(), "a red circle"
    own = dummy_pipe.generate([prompt], [0], settings, method=method)
    plain = dummy_pipe.generate([prompt], [0], settings)
    found = R._FoundEmbedding(method, dummy_pipe.encode_prompts([prompt]))
    attacked = dummy_pipe.generate([prompt], [0], settings, method=found)
    assert not np.array_equal(own, plain)  # the hooks change the image ...
    assert np.array_equal(attacked, own)  # ... and the attacked generation keeps them
