"""``tinyworld-fid``: FID and KID of the general-prompt generations in tiny-CLIP space.

Generated: every image of the suite's ``general`` prompt set (held-out captions, never
trained on). Reference: a fixed set of real general images of the tiny world: its
``heldout_images`` (one real image per held-out caption) followed by the first training
images of kind ``general`` up to ``N_REFERENCE`` in all; statistics cached in the run's
cache folder. Features: the tiny world's CLIP image tower registered in torch-fidelity,
so the number is "FID in tiny-CLIP space" (not comparable to Inception FID).

KID's subset size is lowered explicitly to ``min(100, n_gen, n_ref)`` (the suite makes
fewer than torch-fidelity's default 1000 images) and recorded. As a floor, the FID of as
many *other* real general images as there are generations against the same reference goes
into ``run.calibration["fid"]``: a perfect generator would score about that at this n.
"""

from __future__ import annotations

import numpy as np

from memorybench.api.metric import Metric, RunView
from memorybench.metrics.base import MetricValue
from memorybench.metrics.fid import fid_kid, reference_stats, tinyclip_extractor
from memorybench.api.metric import register_metric

N_REFERENCE = 512
KID_SUBSET_CAP = 100


def reference_images(world, n_reference: int | None = None) -> tuple[np.ndarray, dict, np.ndarray]:
    """(reference images, description, indices of the training general images left over)."""
    n_reference = N_REFERENCE if n_reference is None else n_reference
    general = np.nonzero(np.asarray(world.train_kind) == "general")[0]
    held = np.asarray(world.heldout_images)
    n_train = max(0, n_reference - len(held))
    take = general[:n_train]
    ref = np.concatenate([held, world.train_images[take]]) if n_train else held[:n_reference]
    desc = {"heldout_images": int(min(len(held), n_reference)),
            "train_general": {"count": int(len(take)), "first_index": int(take[0]) if len(take) else None,
                              "last_index": int(take[-1]) if len(take) else None,
                              "rule": "first training images of kind 'general', in training order"}}
    return ref, desc, general[n_train:]


@register_metric()
class TinyWorldFID(Metric):
    name = "tinyworld-fid"
    description = "FID/KID of general-prompt generations against real tiny-world general images, in tiny-CLIP space"

    def compute(self, run: RunView) -> dict[str, MetricValue]:
        from memorybench.tinyworld import world_path

        world = run.data.world
        gen = run.generations("general")
        ref, desc, spare = reference_images(world)
        extractor = tinyclip_extractor(world_path() / "clip")
        kid_size = min(KID_SUBSET_CAP, len(gen), len(ref))
        out = fid_kid(gen, ref, extractor, kid_subset_size=kid_size, cache_dir=run.cache_dir)
        for v in out.values():
            v.protocol["reference_set"] = desc
            v.protocol["kid_subset_size_rule"] = f"min({KID_SUBSET_CAP}, n_gen, n_ref), lowered explicitly"
        floor = {}
        if len(spare) >= 2:
            real = world.train_images[spare[: len(gen)]]
            rs = reference_stats(ref, extractor, run.cache_dir)
            f = fid_kid(real, rs, extractor, kid_subset_size=min(kid_size, len(real)))
            floor = {"fid_real_vs_reference": f["fid_gen"].value, "kid_real_vs_reference": f["kid_gen"].value,
                     "n_real": int(len(real)),
                     "real_images": f"training general images {int(spare[0])}.. (the {len(real)} after the reference)"}
        run.calibration["fid"] = {"reference_set": desc, "n_reference": int(len(ref)), **floor,
                                  "space": extractor.label}
        return out
