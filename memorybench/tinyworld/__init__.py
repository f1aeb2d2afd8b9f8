"""The tiny world: a CPU-trainable Stable-Diffusion-shaped model that really memorizes.

``world_path()`` is the shipped world folder (``pipeline/`` loads with
``StableDiffusionPipeline.from_pretrained``, ``clip/`` holds the tiny CLIP,
``manifest.json`` the recipe and sha256 of every file); ``load_world_data()`` regenerates
its training data from the generator seed.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files
from pathlib import Path


def _generator_module():
    """``datasets/tinyworld/generator.py`` (installed as ``memorybench.datasets``)."""
    from memorybench.datasets.tinyworld import generator

    return generator


def world_path() -> Path:
    """The shipped tiny-world folder (``pipeline/``, ``clip/``, ``manifest.json``)."""
    return Path(str(files("memorybench.datasets.tinyworld") / "world"))


@lru_cache(maxsize=4)
def _cached_world_data(seed: int, n_general: int, dup_high: int, dup_low: int, data_version: int):
    return _generator_module().build_world_data(seed, n_general=n_general, dup_high=dup_high, dup_low=dup_low,
                                                data_version=data_version)


def _shipped_config() -> dict:
    import json

    man = world_path() / "manifest.json"
    cfg = json.loads(man.read_text())["config"] if man.exists() else {}
    # a manifest written before data versions existed was trained on version 1
    return {"data_version": 1, **cfg}


def load_world_data(seed: int | None = None, n_general: int | None = None, dup_high: int | None = None,
                    dup_low: int | None = None, data_version: int | None = None):
    """The tiny world's ``TinyWorldData`` (by default the data settings of the shipped world)."""
    gen = _generator_module()
    cfg = _shipped_config()
    seed = cfg.get("data_seed", 0) if seed is None else seed
    n_general = cfg.get("n_general", gen.N_GENERAL) if n_general is None else n_general
    dup_high = cfg.get("dup_high", gen.DUP_HIGH) if dup_high is None else dup_high
    dup_low = cfg.get("dup_low", gen.DUP_LOW) if dup_low is None else dup_low
    data_version = cfg["data_version"] if data_version is None else data_version
    return _cached_world_data(int(seed), int(n_general), int(dup_high), int(dup_low), int(data_version))


def load_finetune_data(seed: int = 0, data_version: int | None = None):
    """finetune-dup-v1: protected images duplicated + general pairs (base model = the world)."""
    data_version = _shipped_config()["data_version"] if data_version is None else data_version
    return _generator_module().build_finetune_data(seed, data_version=int(data_version))


__all__ = ["world_path", "load_world_data", "load_finetune_data"]
