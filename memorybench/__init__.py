"""memorybench: the common yardstick for memorization mitigation in text-to-image diffusion.

Write a method::

    from dataclasses import dataclass
    from memorybench import Method, register_method

    @dataclass
    class MyConfig:
        strength: float = 0.5

    @register_method()
    class MyMethod(Method):
        name = "my-method"
        kind = "inference"
        description = "What it does, in one line."
        Config = MyConfig

        def guidance_scale(self, step, num_steps, default):
            return default * self.config.strength if step < 5 else default
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("memorybench")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

from . import builtins as _builtins  # noqa: E402,F401  (registers built-in names lazily)
from .errors import MemorybenchError  # noqa: E402
from .method import Method, MethodContext  # noqa: E402
from .registry import (  # noqa: E402
    DETECTORS,
    METHODS,
    METRICS,
    register_detector,
    register_method,
    register_metric,
)

__all__ = [
    "__version__", "Method", "MethodContext", "MemorybenchError",
    "METHODS", "DETECTORS", "METRICS", "register_method", "register_detector", "register_metric",
]
