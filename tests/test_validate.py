"""``validate``: accepts reversible methods, rejects leaky ones with the reason."""

from dataclasses import dataclass

import pytest
import torch

from memorybench import METHODS, Method
from memorybench.run.validate import validate_method


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_is_valid(name):
    """Reversibility and config round trip for every name the registry lists (built-ins and
    installed plugins alike), not a hand-kept list."""
    report = validate_method(METHODS.get(name))
    assert report.ok, report.lines()


class LeakyWeights(Method):
    name = "leaky-weights"
    kind = "weight-edit"

    def prepare(self, pipe, ctx):
        block = pipe.transformer_blocks()[0][1]
        with torch.no_grad():
            block.ff.net[2].weight.mul_(0.5)  # edits without ctx: cannot be undone


class ReversiblePrune(Method):
    name = "reversible-prune"
    kind = "weight-edit"

    def prepare(self, pipe, ctx):
        block = pipe.transformer_blocks()[0][1]
        w = block.ff.net[2].weight
        ctx.set_parameter(w, torch.where(w.abs() < w.abs().median(), torch.zeros_like(w), w))


class LeakyProcessor(Method):
    name = "leaky-processor"

    def prepare(self, pipe, ctx):
        from diffusers.models.attention_processor import AttnProcessor

        key = pipe.attn2_processor_keys()[0]
        pipe.unet.set_attn_processor({**pipe.unet.attn_processors, key: AttnProcessor()})

    def remove(self, pipe, ctx):
        pass


@dataclass
class ScaleCfg:
    factor: float = 2.0


class ProcessorMethod(Method):
    name = "proc-method"
    Config = ScaleCfg

    def attention_processors(self, pipe):
        from diffusers.models.attention_processor import AttnProcessor

        return {k: AttnProcessor() for k in pipe.attn2_processor_keys()}


def test_leaky_weight_edit_is_rejected_naming_the_tensor():
    report = validate_method(LeakyWeights)
    assert not report.ok
    failed = [line for line in report.lines() if line.startswith("FAIL")]
    assert any("weights restored" in line and "ff.net.2.weight" in line for line in failed), failed


def test_edit_through_context_is_restored_and_changes_images(dummy_pipe):
    from memorybench.api.method import apply_method
    from memorybench.model.pipeline import SamplerSettings

    assert validate_method(ReversiblePrune).ok
    s = SamplerSettings(steps=3, height=32, width=32)
    before = dummy_pipe.generate(["a red cat"], [0], s)
    with apply_method(ReversiblePrune(), dummy_pipe):
        during = dummy_pipe.generate(["a red cat"], [0], s)
    after = dummy_pipe.generate(["a red cat"], [0], s)
    assert (before == after).all() and not (before == during).all()


def test_processor_swapped_outside_the_hook_is_restored_by_harness():
    # The harness snapshots processors, so even this method ends up restored...
    assert validate_method(LeakyProcessor).ok
    # ...and hook-installed processors are restored as the same objects.
    assert validate_method(ProcessorMethod).ok
