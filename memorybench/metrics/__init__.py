"""Metrics: copy similarity (SSCD), retrieval, tiled L2, diversity, CLIP score, and the
statistics helpers they share. Each concept lives in its own module."""

from memorybench.metrics.base import MetricValue

__all__ = ["MetricValue"]
