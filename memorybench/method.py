"""Old import path, kept for published plugins: the code lives in :mod:`memorybench.api.method`."""

from memorybench.api.method import (
    FinetuneJob,
    METHODS,
    Method,
    MethodContext,
    TrainingHook,
    apply_method,
    check_method_class,
    register_method,
)

__all__ = ["FinetuneJob", "METHODS", "Method", "MethodContext", "TrainingHook", "apply_method", "check_method_class", "register_method"]
