"""The tiny world's data generator and shipped weights (``world/``)."""

from memorybench.datasets.tinyworld.generator import (
    FinetuneData,
    TinyWorldData,
    build_finetune_data,
    build_world_data,
)

__all__ = ["FinetuneData", "TinyWorldData", "build_finetune_data", "build_world_data"]
