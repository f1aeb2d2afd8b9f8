"""dori-adv-finetune: the adversarial rounds run inside the suite's fine-tune, stay within their
budget and learn the surrogates (its effect on memorization is measured on finetune-dup-robust-v1)."""

import pytest
import torch

from memorybench import METHODS
from memorybench.api.method import MethodContext
from memorybench.methods.dori_adv_finetune import DoriAdvFinetune
from memorybench.model.pipeline import PipelineAdapter
from memorybench.model.sampling import SamplerSettings
from memorybench.run.finetune import SuiteFinetune
from memorybench.suites.finetune import FinetuneRecipe
from tiny_finetune import tiny_set



def test_bad_config_is_rejected():
    with pytest.raises(ValueError):
        DoriAdvFinetune.Config(every=0)
    with pytest.raises(ValueError):
        DoriAdvFinetune.Config(budget=-1.0)


@pytest.mark.slow  # two small fine-tunes (minutes on 2 busy cores)
def test_adversarial_rounds_run_inside_the_fine_tune_within_their_budget(tmp_path):
    torch.manual_seed(0)
    pipe = PipelineAdapter.dummy(seed=0)
    recipe = FinetuneRecipe(steps=12, batch=8, lr=2e-3, warmup=3, caption_dropout=0.0)
    ft = SuiteFinetune(pipe, recipe, tiny_set(dup=30), tmp_path, progress=False)
    settings = SamplerSettings(steps=4, guidance=3.0, height=16, width=16)
    drops, reports = {}, {}
    for method in (METHODS.get("none")(), DoriAdvFinetune(DoriAdvFinetune.Config(every=3, search_steps=2,
                                                                                  capture_draws=20, weight=4.0))):
        ctx = MethodContext(settings=settings)
        with ft.applied(method, ctx):
            pass
        rec = ctx.report["finetune"]
        drops[method.name] = {k: rec["probe_loss_before"][k] - rec["probe_loss_after"][k] for k in ("protected", "general")}
        reports[method.name] = ctx.report
    dori = reports["dori-adv-finetune"]["dori"]
    assert dori["rounds"] == 4  # steps 0, 3, 6, 9
    assert 0 < dori["trigger_delta_rel"] <= 0.25 + 1e-5
    assert dori["surrogate_loss_last"] < dori["surrogate_loss_first"]  # it learns the surrogates
    assert dori["search_loss_last"] is not None
    # the rounds' gradient went into the update: the fine-tune differs from the plain one
    assert drops["dori-adv-finetune"]["protected"] != pytest.approx(drops["none"]["protected"], abs=1e-4), drops
