"""``coco-fid``: FID and KID of the general-prompt generations against the COCO images of
the same captions (the suite's reference set), in the feature space the suite names
(``fid_extractor``: ``inception`` from the user's local torch-fidelity weights file, or
``tinyclip`` for CPU tests).

Reference statistics are cached under the run's cache folder, keyed by the extractor and
the images' content hash. KID's subset size is the suite's ``kid_subset_size`` (torch-fidelity's
1000), lowered explicitly to the number of images when fewer are given, and recorded.
"""

from __future__ import annotations

from memorybench.api.metric import Metric, RunView
from memorybench.metrics.base import MetricValue
from memorybench.metrics.fid import fid_kid
from memorybench.api.metric import register_metric


@register_metric()
class CocoFID(Metric):
    """FID and KID of the general prompts' generations against the COCO images of those
    captions, in the Inception space of a local weights file."""

    name = "coco-fid"
    description = "FID/KID of general-prompt generations against the COCO images of their captions (Inception by local path)"

    def compute(self, run: RunView) -> dict[str, MetricValue]:
        from memorybench.realdata.metric_models import fid_from

        reference = run.data.fid_reference
        gen = run.generations("general")
        extractor = fid_from(run)
        wanted = int(run.suite.options.get("kid_subset_size", 1000))
        kid_size = min(wanted, len(gen), len(reference))
        cuda = run.pipe is not None and str(run.pipe.device).startswith("cuda")
        out = fid_kid(gen, reference, extractor, kid_subset_size=kid_size, cache_dir=run.cache_dir, cuda=cuda)
        for v in out.values():
            v.protocol["reference_set"] = {"source": "COCO images of the chosen captions", "n": len(reference),
                                           "image_ids": "run.calibration['coco_fid']['image_ids']"}
            v.protocol["kid_subset_size_rule"] = f"min({wanted}, n_gen, n_ref), lowered explicitly"
        run.calibration["coco_fid"] = {"space": extractor.label, "n_reference": len(reference),
                                       "image_ids": list(run.data.reference_ids)}
        return out
