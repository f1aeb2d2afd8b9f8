"""Detectors on the shipped tiny world: separation of memorized from general prompts, the
pipeline left untouched, the cost they declare equal to the UNet calls counted, and the
``memorybench detect`` command end to end (small prompt counts)."""

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from memorybench import DETECTORS
from memorybench.cli import main
from memorybench.run.detect import DetectOptions, UNetCallCounter, detection_prompts, run_detection
from memorybench.api.detector import Detector
from memorybench.model.hooks import installed_processors
from memorybench.model.trajectory import early_trajectory
from memorybench.detectors.ren_entropy import AttentionProbe, entropy
from memorybench.metrics.stats import auroc
from memorybench.api.registry import Registry
from memorybench.suites.spec import load_suite

N_PROMPTS = 4  # per class: keeps the file fast; the full figures come from `memorybench detect`
# Deterministic (fixed seeds); below each detector's full-set figure in the README.
MIN_AUROC = {"wen-magnitude": 0.7, "ren-entropy": 0.75, "overestimation": 0.85}


@pytest.fixture(scope="module")
def suite():
    return load_suite("tinyworld-v1")


@pytest.fixture(scope="module")
def world(suite):
    from memorybench.run.request import RunOptions
    from memorybench.run.runner import load_model

    return load_model(suite, RunOptions())


@pytest.fixture(scope="module")
def prompts(suite):
    pos, neg, _ = detection_prompts(suite, N_PROMPTS)
    return pos, neg


def _processor_ids(pipe):
    return {k: id(v) for k, v in pipe.unet.attn_processors.items()}


@pytest.mark.parametrize("name", sorted(MIN_AUROC))
def test_detector_separates_memorized_and_leaves_pipeline_identical(name, world, suite, prompts):
    pos, neg = prompts
    detector = DETECTORS.get(name)()
    weights_before, procs_before = world.state_sha256(), _processor_ids(world)
    with UNetCallCounter(world.unet) as counter:
        out = detector.score(world, pos + neg, suite.sampler)
    assert world.state_sha256() == weights_before
    assert _processor_ids(world) == procs_before
    assert world.state.step_index == -1
    assert counter.calls == detector.unet_calls_per_prompt(suite.sampler) * len(pos + neg)
    assert out.scores.shape == (len(pos + neg),) and np.all(np.isfinite(out.scores))
    value = auroc(out.scores[: len(pos)], out.scores[len(pos):])
    assert value >= MIN_AUROC[name], f"{name}: AUROC {value:.3f} on {len(pos)} memorized vs {len(neg)} general"


def test_wen_magnitude_is_the_text_conditional_norm(world, suite, prompts):
    """Score = mean over seeds of ||eps_c - eps_u|| at step 0, recomputed here by hand (the
    world regresses v, so its outputs are turned into noise predictions first)."""
    prompt = prompts[0][0]
    det = DETECTORS.get("wen-magnitude").from_settings({"seeds": 2})
    got = det.score(world, [prompt], suite.sampler).scores[0]
    sched = world.make_scheduler("ddim")
    sched.set_timesteps(suite.sampler.steps)
    x = world.initial_latents([0, 1], suite.sampler, sched)
    t = sched.timesteps[0]
    with torch.no_grad():
        c = world.encode_prompts([prompt] * 2)
        u = world.encode_prompts([""] * 2)
        out_c = world.unet(sched.scale_model_input(x, t), t, encoder_hidden_states=c).sample
        out_u = world.unet(sched.scale_model_input(x, t), t, encoder_hidden_states=u).sample
        assert world.prediction_type == "v_prediction"
        a = sched.alphas_cumprod[int(t)]
        eps_c, eps_u = (a.sqrt() * o + (1 - a).sqrt() * x for o in (out_c, out_u))
    expected = (eps_c - eps_u).flatten(1).norm(dim=1).mean().item()
    assert got == pytest.approx(expected, rel=1e-4)


def test_attention_probe_leaves_unet_output_bit_identical(world, suite, prompts):
    """The probe records attention on the side; the UNet's output must not move."""
    plain = [r.eps_guided.clone() for r in early_trajectory(world, prompts[0][:2], [0], suite.sampler, 2)]
    sink: list = []
    current = world.unet.attn_processors
    probes = {k: AttentionProbe(current[k], world, 2, sink) for k in world.attn2_processor_keys()}
    with installed_processors(world, probes):
        probed = [r.eps_guided.clone() for r in early_trajectory(world, prompts[0][:2], [0], suite.sampler, 2)]
    assert all(torch.equal(a, b) for a, b in zip(plain, probed))
    assert len(sink) == 2 * len(probes)  # every attn2 layer at both steps
    dist = sink[0]
    assert dist.shape == (2, world.tokenizer.model_max_length)
    assert torch.allclose(dist.sum(dim=1), torch.ones(2), atol=1e-5)


def test_installed_processors_restores_on_error_and_rejects_self_attention(world):
    before = _processor_ids(world)
    key = world.attn2_processor_keys()[0]
    with pytest.raises(RuntimeError):
        with installed_processors(world, {key: world.unet.attn_processors[key]}):
            raise RuntimeError("boom")
    assert _processor_ids(world) == before
    self_attn = next(k for k in world.unet.attn_processors if ".attn1." in k)
    from memorybench.errors import ConfigError

    with pytest.raises(ConfigError, match="non-cross-attention"):
        with installed_processors(world, {self_attn: object()}):
            pass
    assert _processor_ids(world) == before


def test_entropy_known_values():
    uniform = torch.full((1, 4), 0.25)
    onehot = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    assert entropy(uniform).item() == pytest.approx(np.log(4))
    assert entropy(onehot).item() == pytest.approx(0.0)


def test_ren_direction_flips_sign(world, suite, prompts):
    cls = DETECTORS.get("ren-entropy")
    args = (world, prompts[0][:1] + prompts[1][:1], suite.sampler)
    hi = cls.from_settings({"seeds": 1}).score(*args)
    lo = cls.from_settings({"seeds": 1, "direction": "lower"}).score(*args)
    np.testing.assert_allclose(lo.scores, -hi.scores)
    np.testing.assert_allclose(hi.scores, hi.components["entropy"])


def test_overestimation_components_and_selectable_score(world, suite, prompts):
    cls = DETECTORS.get("overestimation")
    args = (world, prompts[0][:1] + prompts[1][:1], suite.sampler)
    out = cls.from_settings({"seeds": 2, "score": "combined"}).score(*args)
    c = out.components
    np.testing.assert_allclose(out.scores, c["collapse"] * c["overestimation"])
    assert np.all(c["collapse"] <= 1.0 + 1e-9) and np.all(c["overestimation"] > 0)
    from memorybench.errors import ConfigError

    with pytest.raises(ConfigError, match="seeds"):
        cls.from_settings({"seeds": 1})


def test_registry_rejects_malformed_detectors():
    from memorybench.api.detector import check_detector_class

    reg = Registry(kind="detector", group="memorybench.test-none", validator=check_detector_class)

    class NoScore(Detector):
        name = "no-score"

    @dataclass
    class Cfg:
        k: int = 1

    class Good(Detector):
        name = "good"
        Config = Cfg

        def score(self, pipe, prompts, settings):
            raise NotImplementedError

        def unet_calls_per_prompt(self, settings):
            return 1

    with pytest.raises(TypeError, match="must implement score"):
        reg.register("no-score", NoScore)
    with pytest.raises(TypeError, match="not a memorybench Detector"):
        reg.register("x", object)
    assert reg.register("good", Good) is Good


def test_run_detection_report(world, suite):
    report = run_detection(suite, "wen-magnitude", {"seeds": 2},
                           DetectOptions(limit=3, progress=False), pipe=world)
    m, c = report["metrics"], report["cost"]
    assert m["n_positive"] == 3 and m["n_negative"] == 3
    assert m["auroc"] == pytest.approx(auroc([p["score"] for p in report["prompts"] if p["label"]],
                                             [p["score"] for p in report["prompts"] if not p["label"]]))
    assert c["unet_calls_per_prompt"] == 4 and c["unet_calls_per_prompt_measured"] == 4
    assert report["detector"]["config"]["seeds"] == 2 and report["model"]["weights_sha256"] == world.weights_sha256
    assert report["provenance"]["memorybench_version"]


def test_cli_detect_end_to_end(tmp_path, capsys):
    out = tmp_path / "det.json"
    rc = main(["detect", "--suite", "tinyworld-v1", "--detector", "overestimation", "--set", "seeds=2", "--set", "steps=1",
               "--limit", "2", "--no-progress", "--output", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "AUROC" in text and "UNet calls/prompt" in text
    report = json.loads(out.read_text())
    assert report["format"] == "memorybench-detection-v1"
    assert len(report["prompts"]) == 4 and report["cost"]["unet_calls_per_prompt_measured"] == 4
    assert set(report["prompts"][0]) >= {"prompt", "label", "score", "collapse", "overestimation"}
    assert report["component_auroc"]["collapse"] == report["metrics"]["auroc"]  # default score = collapse


def test_cli_detect_user_errors(capsys):
    assert main(["detect", "--suite", "tinyworld-v1", "--detector", "wen-magnitud"]) == 2
    assert "did you mean 'wen-magnitude'" in capsys.readouterr().err.lower()
    assert main(["detect", "--suite", "tinyworld-v1", "--detector", "wen-magnitude", "--set", "seed=3"]) == 2
    assert "unknown key 'seed'" in capsys.readouterr().err
    assert main(["detect", "--suite", "smoke-v1", "--detector", "wen-magnitude", "--set", "steps=99",
                 "--limit", "1", "--no-progress"]) == 2
    assert "steps must be in" in capsys.readouterr().err
