"""Lazy registration of built-ins: names are known without importing their modules."""

from .registry import DETECTORS, METHODS, METRICS

BUILTIN_METHODS = {
    "none": "memorybench.methods.none:NoMitigation",
    "wanda-prune": "memorybench.methods.wanda_prune:WandaPrune",
    "wen-embedding-opt": "memorybench.methods.wen_embedding_opt:WenEmbeddingOpt",
    "rta": "memorybench.methods.token_perturbation:RandomTokenAddition",
    "rna": "memorybench.methods.token_perturbation:RandomNumberAddition",
    "gni": "memorybench.methods.token_perturbation:GaussianNoiseInjection",
    "attn-rescale": "memorybench.methods.attn_rescale:AttentionRescale",
    "scheduled-guidance": "memorybench.methods.scheduled_guidance:ScheduledGuidance",
    "grad-projection": "memorybench.methods.grad_projection:GradientProjection",
}
BUILTIN_DETECTORS = {
    "wen-magnitude": "memorybench.detectors.wen_magnitude:WenMagnitude",
    "ren-entropy": "memorybench.detectors.ren_entropy:RenEntropy",
    "overestimation": "memorybench.detectors.overestimation:OverEstimation",
}
BUILTIN_METRICS = {
    "pixel-diversity": "memorybench.metric_plugins.pixel_diversity:PixelDiversity",
    "tinyworld-copy": "memorybench.metric_plugins.tinyworld_copy:TinyWorldCopy",
    "tinyworld-fid": "memorybench.metric_plugins.quality:TinyWorldFID",
    "extraction-attack": "memorybench.metric_plugins.extraction:ExtractionAttack",
    "webster-copy": "memorybench.metric_plugins.webster_copy:WebsterCopy",
    "webster-extraction": "memorybench.metric_plugins.webster_extraction:WebsterExtraction",
    "clip-score": "memorybench.metric_plugins.clip_score:ClipScore",
    "coco-fid": "memorybench.metric_plugins.coco_fid:CocoFID",
}


def register_builtins() -> None:
    for registry, table in ((METHODS, BUILTIN_METHODS), (DETECTORS, BUILTIN_DETECTORS), (METRICS, BUILTIN_METRICS)):
        for name, placeholder in table.items():
            if name not in registry._entries:
                registry.register_lazy(name, placeholder, source="builtin")


register_builtins()
