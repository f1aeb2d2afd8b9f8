"""Old import path, kept for published plugins: the code lives in :mod:`memorybench.model.pipeline`."""

from memorybench.model.pipeline import (
    CFGPrediction,
    PipelineAdapter,
    SamplerSettings,
)

__all__ = ["CFGPrediction", "PipelineAdapter", "SamplerSettings"]
