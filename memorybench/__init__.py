"""memorybench: the common yardstick for memorization mitigation in text-to-image diffusion.

Plugin authors import from here: ``Method`` (with ``MethodContext``), ``Detector`` and
``Metric``, and the decorators that register them (``register_method``,
``register_detector``, ``register_metric``). The guide "Writing a method" in the
documentation walks through a complete example.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("memorybench")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

from memorybench.api.detector import DETECTORS, Detector, register_detector  # noqa: E402
from memorybench.api.method import METHODS, Method, MethodContext, register_method  # noqa: E402
from memorybench.api.metric import METRICS, Metric, register_metric  # noqa: E402
from memorybench.errors import MemorybenchError  # noqa: E402

__all__ = [
    "__version__", "Method", "MethodContext", "Detector", "Metric", "MemorybenchError",
    "METHODS", "DETECTORS", "METRICS", "register_method", "register_detector", "register_metric",
]
