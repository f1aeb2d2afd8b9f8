"""Old import path, kept for published plugins: each registry now lives beside its type
(:mod:`memorybench.api.method`, :mod:`memorybench.api.detector`, :mod:`memorybench.api.metric`)."""

from memorybench.api.detector import DETECTORS, register_detector
from memorybench.api.method import METHODS, register_method
from memorybench.api.metric import METRICS, register_metric
from memorybench.api.registry import Registry, load_plugin

__all__ = ["DETECTORS", "register_detector", "METHODS", "register_method", "METRICS", "register_metric", "Registry", "load_plugin"]
