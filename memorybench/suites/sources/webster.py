"""The ``webster500`` data source of suite sd-webster500-v1.

Reads the user's Webster-500 prompt file (either format), checks that the ground-truth
folder holds an image for every prompt's LAION index and that the metric models the
suite's options name are given, all before the model loads. The prompt file's sha256 and
the content hash of the ground-truth images used go into the result.
"""

from __future__ import annotations

from collections import Counter

from memorybench.errors import ConfigError, DataError
from memorybench.suites.spec import Suite
from memorybench.suites.data import SuiteData, register_data_source
from memorybench.realdata.gt_images import EXPECTED_LAYOUT, GroundTruthFolder
from memorybench.realdata.inputs import InputSpec, check_inputs
from memorybench.realdata.metric_models import clip_input, sscd_input
from memorybench.realdata.webster import EXPECTED_SHAPES, read_webster

PROMPT_SET = "memorized"


def webster_inputs(suite: Suite) -> list[InputSpec]:
    opts = suite.options
    return [
        InputSpec("prompts", "file", f"the Webster-500 prompt file: {EXPECTED_SHAPES}"),
        InputSpec("gt_images", "folder", f"the ground-truth training images by LAION index: {EXPECTED_LAYOUT}"),
        sscd_input(opts["sscd_protocol"]),
        clip_input(opts["clip_arch"]),
    ]


@register_data_source("webster500", user_data=True)
def webster_data(suite: Suite, paths: dict[str, str]) -> SuiteData:
    """Webster-500 memorized prompts from the user's file, with their LAION ground-truth images."""
    from memorybench.metrics.extraction import get_preset

    preset = get_preset(suite.options["attack_preset"])
    if preset.threshold is None or preset.verify_l2 is None:
        raise ConfigError(f"suite '{suite.name}': attack_preset '{preset.name}' calibrates on the tiny world; "
                          "choose one with fixed thresholds (seed001, carlini2023)")
    inputs = check_inputs(suite.name, webster_inputs(suite), paths)
    prompts_file = read_webster(inputs["prompts"])
    spec = suite.prompt_set(PROMPT_SET)
    records = list(prompts_file.records[: spec.limit])
    expected = suite.options.get("prompt_count")
    if expected is not None and len(records) != expected:
        raise DataError(f"'{prompts_file.path}' holds {len(records)} prompts; suite '{suite.name}' expects {expected} "
                        f"(all of Webster-500). To run a subset on purpose, pass --suite-option prompt_count="
                        f"{len(records)} (the result then carries a different suite hash)")
    gt = GroundTruthFolder(inputs["gt_images"])
    indices = [r.laion_index for r in records]
    gt.check(indices)
    return SuiteData(
        prompts={PROMPT_SET: [r.prompt for r in records]},
        seeds={PROMPT_SET: spec.seed_list()},
        inputs=inputs, ground_truth=gt, records={r.prompt: r for r in records},
        labels={r.prompt: r.label for r in records if r.label is not None},
        prompt_file={"format": prompts_file.format, "prompts": len(records),
                     "labels": dict(Counter(r.label for r in records if r.label is not None))},
        hashes={"prompts_file": prompts_file.sha256, "gt_images": gt.sha256(indices)},
    )


__all__ = ["webster_data", "webster_inputs", "PROMPT_SET"]
