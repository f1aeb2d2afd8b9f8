"""Where each built-in plugin lives, by name: registries know these names without
importing anything (the module is imported when the plugin is first asked for)."""

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
    "nemo": "memorybench.methods.nemo:Nemo",
    "dori-adv-finetune": "memorybench.methods.dori_adv_finetune:DoriAdvFinetune",
    "wen-train-filter": "memorybench.methods.wen_train_filter:WenTrainFilter",
    "static-transition": "memorybench.methods.guidance_transition:StaticTransition",
    "opposite-guidance": "memorybench.methods.guidance_transition:OppositeGuidance",
    "dynamic-transition": "memorybench.methods.guidance_transition:DynamicTransition",
    "init-noise-adjust": "memorybench.methods.init_noise_adjust:InitNoiseAdjust",
    "sail": "memorybench.methods.sail:Sail",
    "prss": "memorybench.methods.prss:PRSS",
}
BUILTIN_DETECTORS = {
    "wen-magnitude": "memorybench.detectors.wen_magnitude:WenMagnitude",
    "ren-entropy": "memorybench.detectors.ren_entropy:RenEntropy",
    "overestimation": "memorybench.detectors.overestimation:OverEstimation",
    "sail-sharpness": "memorybench.detectors.sail_sharpness:SailSharpness",
    "anisotropy": "memorybench.detectors.anisotropy:Anisotropy",
    "nemo-ssim": "memorybench.detectors.nemo_ssim:NemoSSIM",
}
BUILTIN_METRICS = {
    "pixel-diversity": "memorybench.metrics.plugins.pixel_diversity:PixelDiversity",
    "tinyworld-copy": "memorybench.metrics.plugins.tinyworld_copy:TinyWorldCopy",
    "tinyworld-fid": "memorybench.metrics.plugins.tinyworld_fid:TinyWorldFID",
    "extraction-attack": "memorybench.metrics.plugins.extraction_attack:ExtractionAttack",
    "webster-copy": "memorybench.metrics.plugins.webster_copy:WebsterCopy",
    "webster-extraction": "memorybench.metrics.plugins.webster_extraction:WebsterExtraction",
    "clip-score": "memorybench.metrics.plugins.clip_score:ClipScore",
    "coco-fid": "memorybench.metrics.plugins.coco_fid:CocoFID",
    "bright-ending-copy": "memorybench.metrics.plugins.bright_ending_copy:BrightEndingCopy",
}
BUILTIN_DATA_SOURCES = {
    "inline": "memorybench.suites.data:inline_prompts",
    "tinyworld": "memorybench.suites.sources.tinyworld:tinyworld_data",
    "finetune-dup": "memorybench.suites.sources.finetune_dup:finetune_dup_data",
    "webster500": "memorybench.suites.sources.webster:webster_data",
    "coco-captions": "memorybench.suites.sources.coco:coco_data",
}
