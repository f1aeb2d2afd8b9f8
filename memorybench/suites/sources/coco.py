"""The ``coco-captions`` data source of suite coco-quality.

``n_captions`` (caption, image) pairs of the user's COCO captions JSON, chosen by
``selection_seed`` (see :mod:`memorybench.realdata.coco`), become the general prompts;
their images, resized to the generation size, are the FID/KID reference set. Every image
file and metric model is checked before the model loads; the captions file's sha256 and
the content hash of the reference images go into the result.
"""

from __future__ import annotations

from memorybench.errors import ConfigError
from memorybench.suites.spec import Suite
from memorybench.suites.data import SuiteData, register_data_source
from memorybench.realdata.coco import EXPECTED_JSON, CocoImages, image_paths, read_coco_captions
from memorybench.realdata.inputs import InputSpec, check_inputs
from memorybench.realdata.metric_models import clip_input, fid_input

PROMPT_SET = "general"


def coco_inputs(suite: Suite) -> list[InputSpec]:
    opts = suite.options
    return [
        InputSpec("captions", "file", EXPECTED_JSON),
        InputSpec("images", "folder", "the COCO images the captions JSON names (e.g. val2014/*.jpg)"),
        fid_input(opts["fid_extractor"]),
        clip_input(opts["clip_arch"]),
    ]


@register_data_source("coco-captions", user_data=True)
def coco_data(suite: Suite, paths: dict[str, str]) -> SuiteData:
    """COCO captions (a seeded choice) from the user's annotations, with their images as the FID reference."""
    inputs = check_inputs(suite.name, coco_inputs(suite), paths)
    s = suite.sampler
    if s.height != s.width:
        raise ConfigError(f"suite '{suite.name}': FID reference images are square crops; "
                          f"the sampler makes {s.height}x{s.width}")
    captions = read_coco_captions(inputs["captions"])
    chosen = captions.choose(int(suite.options["n_captions"]), int(suite.options["selection_seed"]))
    reference = CocoImages(inputs["images"], image_paths(inputs["images"], chosen), resolution=s.height)
    spec = suite.prompt_set(PROMPT_SET)
    return SuiteData(
        prompts={PROMPT_SET: [c.caption for c in chosen]},
        seeds={PROMPT_SET: spec.seed_list()},
        inputs=inputs, fid_reference=reference, reference_ids=[c.image_id for c in chosen],
        hashes={"captions_file": captions.sha256, "coco_images": reference.sha256()},
    )


__all__ = ["coco_data", "coco_inputs", "PROMPT_SET"]
