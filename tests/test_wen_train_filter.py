"""wen-train-filter and the per-sample hook of the fine-tune loop: known answers on a dummy,
what the loop does with the weights, and (slow) what the filter leaves out on the tiny world."""

import numpy as np
import pytest
import torch

from memorybench import METHODS
from memorybench.api.method import MethodContext, TrainingHook
from memorybench.methods.wen_train_filter import WenTrainFilter
from memorybench.model.pipeline import PipelineAdapter
from memorybench.run.finetune import SuiteFinetune
from memorybench.suites.finetune import FinetuneRecipe
from tiny_finetune import tiny_set


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    return PipelineAdapter.dummy(seed=0)


def _unet_bytes(p):
    return {k: v.detach().contiguous().view(torch.uint8).numpy().tobytes() for k, v in p.unet.state_dict().items()}


class _ZeroUNet(torch.nn.Module):
    """eps(x_t, t, c) = 0 for every input; records what it was called with."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, t, emb):
        self.calls.append((x.shape, t.clone(), emb.clone()))
        return type("Out", (), {"sample": torch.zeros_like(x)})()


def test_a_sample_at_or_above_the_threshold_gets_weight_0():
    from memorybench.methods.wen_train_filter import _FilterHook

    null = torch.full((1, 3, 4), 0.5)
    protected = torch.ones(1, 3, 4)
    stats = {"samples_seen": 0, "samples_left_out": 0, "protected_seen": 0, "protected_left_out": 0,
             "others_seen": 0, "others_left_out": 0, "steps_without_update": 0}
    hook = _FilterHook(2.0, null, protected, stats)
    unet = _ZeroUNet()
    # predictions with ||pred - 0|| = 1, 3, 2 (exactly the threshold), 0.5 over a 2x2x2 latent
    pred = torch.zeros(4, 2, 2, 2)
    for i, norm in enumerate((1.0, 3.0, 2.0, 0.5)):
        pred[i, 0, 0, 0] = norm
    emb = torch.stack([protected[0], protected[0], torch.zeros(3, 4), null[0]])
    t = torch.tensor([5, 10, 15, 20])
    w = hook.sample_weights(torch.randn(4, 2, 2, 2), t, emb, unet, pred)
    assert w.tolist() == [1.0, 0.0, 0.0, 1.0]
    (shape, t_seen, emb_seen), = unet.calls  # one extra pass: the empty caption at the same x_t, t
    assert shape == (4, 2, 2, 2) and torch.equal(t_seen, t) and torch.equal(emb_seen, null.expand(4, 3, 4))
    assert stats["samples_left_out"] == 2 and stats["protected_seen"] == 2 and stats["protected_left_out"] == 1
    assert stats["others_seen"] == 1 and stats["others_left_out"] == 1  # the dropped caption is in neither group
    assert stats["norm_quantiles_protected"]["0.5"] == pytest.approx(2.0)


def test_the_loop_hands_the_hook_each_sample_and_honours_its_weights(pipe, tmp_path):
    """The hook sees the step's batch sample by sample; unit weights give the plain mean's
    loss, and leaving out the duplicated samples changes what is learned."""
    seen = []
    data = tiny_set(dup=30)
    with torch.no_grad():
        protected = pipe.encode_prompts(list(data.protected_captions))

    class Weigh(TrainingHook):
        def __init__(self, leave_out_protected):
            self.leave_out_protected = leave_out_protected

        def sample_weights(self, latents_noisy, timesteps, text_embeddings, unet, prediction):
            seen.append((tuple(latents_noisy.shape), tuple(timesteps.shape), tuple(text_embeddings.shape),
                         tuple(prediction.shape), unet is pipe.unet, prediction.requires_grad))
            if not self.leave_out_protected:
                return torch.ones(len(latents_noisy))
            diff = (text_embeddings[:, None] - protected[None]).abs().flatten(2).amax(2)
            return (diff.min(1).values > 1e-4).float()

    def method(leave_out_protected):
        class Method(type(METHODS.get("none")())):
            name, kind = f"weigh-{leave_out_protected}", "training"

            def training_hook(self, pipe, ctx, job):
                return Weigh(leave_out_protected)
        return Method()

    recipe = FinetuneRecipe(steps=8, batch=8, lr=2e-3, warmup=2, caption_dropout=0.0)
    ft = SuiteFinetune(pipe, recipe, data, tmp_path, progress=False)
    records = {}
    for m in (METHODS.get("none")(), method(False), method(True)):
        ctx = MethodContext()
        with ft.applied(m, ctx):
            pass
        records[m.name] = ctx.report["finetune"]
    assert len(seen) == 16
    b, c, h, w = seen[0][0]
    assert seen[0] == ((b, c, h, w), (b,), (b, *protected.shape[1:]), (b, c, h, w), True, False) and b == 8
    plain, ones, left = records["none"], records["weigh-False"], records["weigh-True"]
    assert "sample_weights" not in plain and ones["sample_weights"]["samples_left_out"] == 0
    np.testing.assert_allclose(ones["loss_curve"], plain["loss_curve"], rtol=1e-5)  # unit weights: the mean
    assert 0 < left["sample_weights"]["samples_left_out"] < 64  # the protected samples drawn (most of them)
    assert left["loss_curve"] != plain["loss_curve"]
    drop = {k: r["probe_loss_before"]["protected"] - r["probe_loss_after"]["protected"] for k, r in records.items()}
    # the dummy learns generic denoising, so the protected images still improve without their
    # samples, but less than when they are trained on
    assert drop["weigh-True"] < drop["none"], drop


def test_wen_filter_leaves_out_what_reaches_the_threshold_and_all_out_means_no_update(pipe, tmp_path):
    recipe = FinetuneRecipe(steps=4, batch=8, lr=2e-3, warmup=1, caption_dropout=0.1)
    before = _unet_bytes(pipe)
    ft = SuiteFinetune(pipe, recipe, tiny_set(), tmp_path, progress=False)
    ctx = MethodContext()
    with ft.applied(WenTrainFilter(WenTrainFilter.Config(threshold=1e-9)), ctx):  # only dropped captions pass
        pass
    stats = ctx.report["wen_train_filter"]
    assert stats["left_out_share_protected"] == 1.0 and stats["left_out_share_others"] == 1.0
    assert stats["samples_left_out"] == ctx.report["finetune"]["sample_weights"]["samples_left_out"]
    assert stats["samples_left_out"] == stats["protected_seen"] + stats["others_seen"]  # every captioned sample
    # a threshold inside the measured magnitudes leaves some out, not all
    mid = stats["norm_quantiles_others"]["0.5"]
    ctx = MethodContext()
    with ft.applied(WenTrainFilter(WenTrainFilter.Config(threshold=mid)), ctx):
        pass
    stats = ctx.report["wen_train_filter"]
    assert 0 < stats["samples_left_out"] < stats["samples_seen"]
    assert _unet_bytes(pipe) == before  # the base weights come back


def test_every_sample_left_out_leaves_the_weights_unchanged(pipe, tmp_path):
    class NoneKept(TrainingHook):
        def sample_weights(self, latents_noisy, timesteps, text_embeddings, unet, prediction):
            return torch.zeros(len(latents_noisy))

    class Method(type(METHODS.get("none")())):
        name, kind = "none-kept", "training"

        def training_hook(self, pipe, ctx, job):
            return NoneKept()

    recipe = FinetuneRecipe(steps=4, batch=4, lr=1e-2, warmup=1, caption_dropout=0.0, ema=0.0)
    ft = SuiteFinetune(pipe, recipe, tiny_set(), tmp_path, progress=False)
    before = _unet_bytes(pipe)
    inside = {}
    with ft.applied(Method(), MethodContext()):
        inside = _unet_bytes(pipe)
    assert inside == before


@pytest.mark.parametrize("bad, message", [(lambda b: torch.ones(b + 1), "shape"),
                                          (lambda b: -torch.ones(b), "finite and >= 0"),
                                          (lambda b: [1.0] * b, "shape")])
def test_bad_sample_weights_are_one_line_naming_the_method(pipe, tmp_path, bad, message):
    from memorybench.errors import PluginError

    class Bad(TrainingHook):
        def sample_weights(self, latents_noisy, timesteps, text_embeddings, unet, prediction):
            return bad(len(latents_noisy))

    class Method(type(METHODS.get("none")())):
        name, kind = "bad-weights", "training"

        def training_hook(self, pipe, ctx, job):
            return Bad()

    ft = SuiteFinetune(pipe, FinetuneRecipe(steps=2, batch=4, warmup=1), tiny_set(), tmp_path, progress=False)
    with pytest.raises(PluginError, match=f"bad-weights.*{message}"):
        with ft.applied(Method(), MethodContext()):
            pass


def test_threshold_must_be_positive():
    with pytest.raises(Exception, match="threshold must be > 0"):
        WenTrainFilter.from_settings({"threshold": 0})
    assert WenTrainFilter().config.threshold == 2.0  # the paper's value
    assert "Wen" in WenTrainFilter.reference and "ICLR 2024" in WenTrainFilter.reference


@pytest.mark.slow  # a 40-step fine-tune of the tiny world (about 45 s on 2 cores)
def test_on_the_tiny_world_the_duplicated_captions_are_left_out_more_often(tmp_path):
    """finetune-dup-v1's data, a 40-step recipe, threshold 16 (about the 95th percentile of
    the general samples' magnitude on the shipped world): the protected (duplicated)
    captions reach the threshold about twice as often as the others (measured: 11.1% against
    5.7% here; 8.5% against 5.5% over the suite's 600 steps), because the upper tail of
    their magnitudes is far longer. What this does to copying is measured on the methods page."""
    from memorybench.suites.data import load_suite_data
    from memorybench.suites.spec import load_suite
    from memorybench.tinyworld import world_path

    data = load_suite_data(load_suite("finetune-dup-v1"))
    world = PipelineAdapter.from_folder(world_path() / "pipeline", model_id="tinyworld-v1")
    recipe = FinetuneRecipe(steps=40, batch=16, lr=1e-3, warmup=5)
    ft = SuiteFinetune(world, recipe, data.finetune_set, tmp_path, progress=False)
    ctx = MethodContext()
    with ft.applied(WenTrainFilter(WenTrainFilter.Config(threshold=16.0)), ctx):
        pass
    stats = ctx.report["wen_train_filter"]
    print({k: v for k, v in stats.items() if k != "magnitude"})
    assert stats["protected_seen"] > 100 and stats["others_seen"] > 300
    assert stats["left_out_share_protected"] > 1.5 * stats["left_out_share_others"], stats
    assert 0 < stats["left_out_share_others"] < 0.2, stats
    assert stats["norm_quantiles_protected"]["0.95"] > 2 * stats["norm_quantiles_others"]["0.95"], stats
    assert ctx.report["finetune"]["sample_weights"]["samples_left_out"] == stats["samples_left_out"]
