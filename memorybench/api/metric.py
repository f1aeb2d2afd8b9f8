"""The metric plugin API: a metric reads a finished run's images and returns values.

Metrics never generate: the runner generates (through the cache) first, then hands every
metric the same ``RunView``. A metric returns ``{column_name: MetricValue}``; the suite
says which columns are leaderboard (summary) columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from memorybench.api.builtins import BUILTIN_METRICS
from memorybench.api.registry import Registry
from memorybench.metrics.base import MetricValue

if TYPE_CHECKING:
    from memorybench.model.pipeline import PipelineAdapter
    from memorybench.suites.spec import Suite
    from memorybench.suites.data import SuiteData


@dataclass
class RunView:
    suite: "Suite"
    data: "SuiteData"
    # prompt set name -> prompt -> images (seeds, H, W, 3) uint8, seeds in suite order
    images: dict[str, dict[str, np.ndarray]]
    pipe: "PipelineAdapter | None" = None
    cache_dir: Path | None = None
    progress: bool = True
    calibration: dict[str, Any] = field(default_factory=dict)  # metrics may record floors here

    def generations(self, prompt_set: str) -> np.ndarray:
        """Every image of one prompt set, (prompts x seeds, H, W, 3), prompt-major."""
        _, images = self.stacked(prompt_set)
        return images.reshape(-1, *images.shape[2:])

    def stacked(self, prompt_set: str) -> tuple[list[str], np.ndarray]:
        """Prompts and images (prompts, seeds, H, W, 3) of one prompt set."""
        prompts = list(self.images[prompt_set])
        return prompts, np.stack([self.images[prompt_set][p] for p in prompts])


class Metric:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def compute(self, run: RunView) -> dict[str, MetricValue]:
        raise NotImplementedError


def check_metric_class(cls: Any) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Metric)):
        raise TypeError(f"{cls!r} is not a memorybench Metric subclass")
    if not cls.name:
        raise TypeError(f"{cls.__name__} has no name")


METRICS: Registry = Registry(kind="metric", group="memorybench.metrics", validator=check_metric_class,
                             builtins=BUILTIN_METRICS)
register_metric = METRICS.decorator
