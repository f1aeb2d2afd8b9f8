"""The ``tinyworld`` data source: prompts, seeds and ground truth of suite tinyworld-v1.

Memorized prompts are split once, by the suite, into a calibration subset (that methods
such as Wanda pruning may fit on) and the evaluation prompts, identical for every method
so that results stay comparable.
"""

from __future__ import annotations

import hashlib
import json
import warnings

from memorybench.suites.spec import Suite
from memorybench.suites.data import SuiteData, TrainingImages, register_data_source


@register_data_source("tinyworld")
def tinyworld_data(suite: Suite) -> SuiteData:
    """The tiny world's memorized prompts (after the calibration split) and held-out general prompts."""
    from memorybench.tinyworld import load_world_data, world_path

    world = load_world_data()
    n_cal = suite.calibration_prompts
    mem_spec, gen_spec = suite.prompt_set("memorized"), suite.prompt_set("general")
    memorized = list(world.memorized_prompts)
    if n_cal >= len(memorized):
        raise ValueError(f"suite '{suite.name}': {n_cal} calibration prompts leave no memorized prompt to evaluate")
    eval_mem = memorized[n_cal:][: mem_spec.limit]
    general = list(world.heldout_prompts)[: gen_spec.limit]
    source_index = {p: int(i) for p, i in zip(memorized, world.memorized_indices)}
    manifest = world_path() / "manifest.json"
    hashes = {"tinyworld_data": world.sha256()}
    if manifest.is_file():
        raw = manifest.read_bytes()
        hashes["tinyworld_manifest"] = hashlib.sha256(raw).hexdigest()
        trained_on = json.loads(raw).get("data_sha256")
        if trained_on and trained_on != hashes["tinyworld_data"]:
            # e.g. another Pillow or scikit-image resized the photos differently: the numbers
            # still run but are not comparable with the shipped leaderboard
            warnings.warn(f"the regenerated tiny-world data (sha256 {hashes['tinyworld_data'][:12]}) differ from the "
                          f"data the shipped world was trained on ({trained_on[:12]}); check Pillow / scikit-image versions",
                          stacklevel=2)
    return SuiteData(
        prompts={"memorized": eval_mem, "general": general},
        seeds={"memorized": mem_spec.seed_list(), "general": gen_spec.seed_list()},
        calibration_prompts=memorized[:n_cal],
        world=world,
        training=TrainingImages(images=world.train_images, index=source_index, sha256=hashes["tinyworld_data"]),
        heldout_images=dict(zip(world.heldout_prompts, world.heldout_images)),
        hashes=hashes,
    )
