"""The ``webster500`` data source of suite sd-webster500-v1.

Reads the user's Webster-500 prompt file (either format), checks that the ground-truth
folder holds an image for every prompt's LAION index and that the metric models the
suite's options name are given, all before the model loads. The prompt file's sha256 and
the content hash of the ground-truth images used go into the result.
"""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np

from memorybench.errors import ConfigError, DataError
from memorybench.suites.spec import Suite
from memorybench.suites.data import SuiteData, register_data_source
from memorybench.realdata.gt_images import EXPECTED_LAYOUT, GroundTruthFolder
from memorybench.realdata.inputs import InputSpec, check_inputs
from memorybench.realdata.prompt_list import read_prompt_list
from memorybench.realdata.metric_models import clip_input, sscd_input
from memorybench.realdata.webster import EXPECTED_SHAPES, read_webster

PROMPT_SET = "memorized"
GENERAL_SET, GENERAL_INPUT = "general", "general_prompts"


def webster_inputs(suite: Suite, prompts_only: bool = False) -> list[InputSpec]:
    """The files the suite reads. ``prompts_only`` (detect, analyze): the metric inputs
    (ground truth, SSCD, CLIP) become optional, since nothing is measured against them."""
    opts = suite.options
    metric_inputs = [
        InputSpec("gt_images", "folder", f"the ground-truth training images by LAION index: {EXPECTED_LAYOUT}"),
        sscd_input(opts["sscd_protocol"]),
        clip_input(opts["clip_arch"]),
    ]
    if prompts_only:
        metric_inputs = [InputSpec(i.key, i.kind, i.what, required=False) for i in metric_inputs]
    return [
        InputSpec("prompts", "file", f"the Webster-500 prompt file: {EXPECTED_SHAPES}"),
        InputSpec(GENERAL_INPUT, "file", "non-memorized prompts (e.g. COCO captions or a Lexica list): one a line, "
                  "or a CSV / JSONL with a prompt, caption or text field (optional for run; detect needs it)",
                  required=False),
        *metric_inputs,
    ]


def calibration_split(records: list, count: int, seed: int) -> tuple[list, list]:
    """A seeded draw of ``count`` prompts that methods may fit on (e.g. Wanda's masks, found on
    10-prompt subsets as ConceptPrune does); the rest are evaluated. Order is kept on both sides."""
    if count <= 0:
        return [], list(records)
    if count >= len(records):
        raise ConfigError(f"calibration_prompts={count} leaves no prompt of {len(records)} to evaluate "
                          "(set --suite-option calibration_prompts=N)")
    chosen = set(np.random.default_rng(seed).choice(len(records), size=count, replace=False).tolist())
    return ([r for i, r in enumerate(records) if i in chosen],
            [r for i, r in enumerate(records) if i not in chosen])


@register_data_source("webster500", user_data=True)
def webster_data(suite: Suite, paths: dict[str, str], prompts_only: bool = False) -> SuiteData:
    """Webster-500 memorized prompts from the user's file, with their LAION ground-truth images."""
    from memorybench.metrics.extraction import get_preset

    preset = get_preset(suite.options["attack_preset"])
    if preset.threshold is None or preset.verify_l2 is None:
        raise ConfigError(f"suite '{suite.name}': attack_preset '{preset.name}' calibrates on the tiny world; "
                          "choose one with fixed thresholds (chavhan2024, carlini2023)")
    inputs = check_inputs(suite.name, webster_inputs(suite, prompts_only), paths)
    prompts_file = read_webster(inputs["prompts"])
    spec = suite.prompt_set(PROMPT_SET)
    records = list(prompts_file.records)
    expected = suite.options.get("prompt_count")
    if expected is not None and len(records) != expected:
        raise DataError(f"'{prompts_file.path}' holds {len(records)} prompts; suite '{suite.name}' expects {expected} "
                        f"(all of Webster-500). To run a subset on purpose, pass --suite-option prompt_count="
                        f"{len(records)} or --limit-prompts N (the result then carries a different suite hash)")
    calibration, records = calibration_split(records, int(suite.options.get("calibration_prompts", 0)),
                                             int(suite.options.get("calibration_seed", 0)))
    records = records[: spec.limit]
    hashes = {"prompts_file": prompts_file.sha256}
    coverage = None
    gt = None
    if "gt_images" in inputs:
        gt = GroundTruthFolder(inputs["gt_images"])
        records, coverage = _ground_truth_coverage(suite, gt, records)
        hashes["gt_images"] = gt.sha256([r.laion_index for r in records])
    prompts = {PROMPT_SET: [r.prompt for r in records]}
    seeds = {PROMPT_SET: spec.seed_list()}
    if GENERAL_INPUT in inputs:
        general = read_prompt_list(inputs[GENERAL_INPUT])
        general_spec = _general_spec(suite)
        memorized = {r.prompt for r in prompts_file.records}
        prompts[GENERAL_SET] = [p for p in general.prompts if p not in memorized][: general_spec.limit]
        seeds[GENERAL_SET] = general_spec.seed_list()
        hashes[GENERAL_INPUT] = general.sha256
    return SuiteData(
        prompts=prompts, seeds=seeds, calibration_prompts=[r.prompt for r in calibration],
        inputs=inputs, ground_truth=gt, records={r.prompt: r for r in records},
        labels={r.prompt: r.label for r in records if r.label is not None},
        prompt_file={"format": prompts_file.format, "prompts": len(records), "calibration_prompts": len(calibration),
                     "labels": dict(Counter(r.label for r in records if r.label is not None)),
                     **({"ground_truth_coverage": coverage} if coverage else {})},
        hashes=hashes,
    )


def _general_spec(suite: Suite):
    try:
        return suite.prompt_set(GENERAL_SET)
    except ConfigError:
        raise ConfigError(f"suite '{suite.name}' has no prompt set '{GENERAL_SET}' for --data {GENERAL_INPUT}") from None


def _ground_truth_coverage(suite: Suite, gt: GroundTruthFolder, records: list) -> tuple[list, dict | None]:
    """Missing LAION images (dead links) are an error naming them, or with
    ``missing_gt_images: skip`` the prompts without an image are left out and counted."""
    missing = [r for r in records if r.laion_index not in gt]
    if not missing:
        return records, None
    policy = suite.options.get("missing_gt_images", "error")
    if policy not in ("error", "skip"):
        raise ConfigError(f"suite '{suite.name}' option missing_gt_images must be error or skip, got {policy!r}")
    if policy == "error":
        gt.check([r.laion_index for r in records])  # one line naming the first missing index and the count
    kept = [r for r in records if r.laion_index in gt]
    if not kept:
        raise DataError(f"gt_images folder '{gt.root}' has no image for any of the {len(records)} prompts")
    shown = ", ".join(str(r.laion_index) for r in missing[:10]) + (", ..." if len(missing) > 10 else "")
    print(f"warning: {len(missing)} of {len(records)} prompts have no ground-truth image (LAION index {shown}); "
          "evaluating the other ones (missing_gt_images: skip)", file=sys.stderr)
    return kept, {"prompts": len(records), "with_image": len(kept),
                  "missing_laion_indices": sorted(r.laion_index for r in missing)}


__all__ = ["webster_data", "webster_inputs", "PROMPT_SET"]
