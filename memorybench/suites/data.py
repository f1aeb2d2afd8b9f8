"""What a suite's data source hands the runner and the metrics: ``SuiteData``.

A data source is a function ``(suite, paths) -> SuiteData`` registered by name in
``DATA_SOURCES`` (built-ins by name, third-party ones through the entry-point group
``memorybench.data_sources`` or ``@register_data_source``); a suite names its source in
its ``data`` field. ``paths`` are the local files the user passed with ``--data KEY=PATH``;
a source that reads no user data is registered with ``user_data=False`` and gets none.
"""

from __future__ import annotations

import inspect

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from memorybench.api.builtins import BUILTIN_DATA_SOURCES
from memorybench.api.registry import Registry, current_source
from memorybench.core.config import sha256_json
from memorybench.errors import ConfigError

if TYPE_CHECKING:
    from memorybench.suites.finetune import FinetuneSet
    from memorybench.suites.spec import Suite
    from memorybench.datasets.tinyworld.generator import TinyWorldData


@dataclass
class TrainingImages:
    """The images a model was trained on, and which one each memorized prompt copies."""

    images: np.ndarray  # (N, H, W, 3) uint8
    index: dict[str, int]  # memorized prompt -> row of its training image
    sha256: str  # identity of ``images``, recorded with copy metrics


@dataclass
class SuiteData:
    """Prompts and seeds to generate, plus what the metrics need (source images, ground truth)."""

    prompts: dict[str, list[str]]  # prompt set -> prompts (evaluation prompts only)
    seeds: dict[str, list[int]]
    calibration_prompts: list[str] = field(default_factory=list)
    hashes: dict[str, str] = field(default_factory=dict)  # data name -> sha256, into the result
    # -- the tiny world and fine-tuning suites
    world: "TinyWorldData | None" = None
    training: TrainingImages | None = None
    heldout_images: dict[str, np.ndarray] = field(default_factory=dict)  # general prompt -> its real image
    finetune_set: "FinetuneSet | None" = None
    # -- real data read from the user's files (--data)
    inputs: dict[str, Any] = field(default_factory=dict)  # checked --data paths and metric models
    ground_truth: Any = None  # has .images(index) -> (k, H, W, 3) uint8 (a ground-truth image folder)
    records: dict[str, Any] = field(default_factory=dict)  # prompt -> record with .laion_index
    labels: dict[str, str] = field(default_factory=dict)  # prompt -> "VM" / "TM" (Webster)
    prompt_file: dict[str, Any] = field(default_factory=dict)  # format and counts of the prompt file
    fid_reference: Any = None  # reference images for FID (COCO)
    reference_ids: list[int] = field(default_factory=list)  # which reference images were chosen

    def source_image(self, prompt: str) -> np.ndarray | None:
        """The training image a memorized prompt copies, when the data source knows it."""
        if self.training is not None and prompt in self.training.index:
            return np.asarray(self.training.images[self.training.index[prompt]])
        if prompt in self.records and self.ground_truth is not None:
            found = self.ground_truth.images(self.records[prompt].laion_index)
            return np.asarray(found[0]) if len(found) else None
        return None


@dataclass(frozen=True)
class DataSource:
    """A registered data source: its loader and whether it reads the user's ``--data`` paths."""

    name: str
    load: Callable[..., SuiteData]  # (suite, paths) if user_data else (suite)
    user_data: bool = False

    @property
    def description(self) -> str:
        """The first line of the loader's docstring (what ``memorybench list data-sources`` shows)."""
        return (self.load.__doc__ or "").strip().split("\n")[0]


def _check_data_source(obj: Any) -> None:
    if not isinstance(obj, DataSource):
        raise TypeError(f"{obj!r} is not a memorybench DataSource (use @register_data_source)")


DATA_SOURCES: Registry = Registry(kind="data source", group="memorybench.data_sources",
                                  validator=_check_data_source, builtins=BUILTIN_DATA_SOURCES)


def register_data_source(name: str, user_data: bool = False) -> Callable[[Callable[..., SuiteData]], Callable[..., SuiteData]]:
    """Register ``fn(suite)`` (or ``fn(suite, paths)`` with ``user_data=True``) as data source ``name``."""
    def wrap(fn: Callable[..., SuiteData]) -> Callable[..., SuiteData]:
        DATA_SOURCES.register(name, DataSource(name, fn, user_data), source=current_source())
        return fn

    return wrap


def load_suite_data(suite: "Suite", paths: dict[str, str] | None = None, prompts_only: bool = False) -> SuiteData:
    """The suite's prompts and data. ``paths``: local files and folders the user passed
    (``--data KEY=PATH``), for sources that read user data; they check them.
    ``prompts_only``: the caller scores prompts and measures nothing against training
    images (detect, analyze); a source that accepts the flag then asks only for its prompts."""
    if suite.data not in DATA_SOURCES:
        raise ConfigError(f"suite '{suite.name}': unknown data source '{suite.data}' "
                          f"(known: {', '.join(DATA_SOURCES.names())})")
    source = DATA_SOURCES.get(suite.data)
    if source.user_data:
        if prompts_only and "prompts_only" in inspect.signature(source.load).parameters:
            return source.load(suite, dict(paths or {}), prompts_only=True)
        return source.load(suite, dict(paths or {}))
    if paths:
        raise ConfigError(f"suite '{suite.name}' reads no local data: remove --data {', '.join(sorted(paths))}")
    return source.load(suite)


@register_data_source("inline")
def inline_prompts(suite: "Suite") -> SuiteData:
    """Prompts written in the suite itself; the first set's first ``calibration_prompts`` are held out."""
    # calibration prompts come off the full first set, then ``limit`` applies to what is evaluated
    # (as every source does, so a smoke --limit-prompts never eats the calibration prompts)
    first = suite.prompt_sets[0].name
    n_cal = suite.calibration_prompts
    prompts = {ps.name: list(ps.prompts[n_cal if ps.name == first else 0:])[: ps.limit] for ps in suite.prompt_sets}
    calib = list(suite.prompt_sets[0].prompts[:n_cal])
    return SuiteData(prompts=prompts, seeds={ps.name: ps.seed_list() for ps in suite.prompt_sets},
                     calibration_prompts=calib, hashes={"prompts": sha256_json(prompts)})
