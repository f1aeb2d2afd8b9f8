"""Old import path, kept for published plugins: the code lives in :mod:`memorybench.api.metric`."""

from memorybench.api.metric import (
    METRICS,
    Metric,
    RunView,
    check_metric_class,
    register_metric,
)

__all__ = ["METRICS", "Metric", "RunView", "check_metric_class", "register_metric"]
