"""Result JSON v1: build, validate against the schema, write atomically, read back."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from memorybench.core.io import atomic_write_text, read_json_strict
from memorybench.errors import ValidationError
from memorybench.results.schema import RESULT_SCHEMA


def _finite(obj: Any, where: str = "result") -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise ValidationError(f"{where} is not a finite number ({obj})")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _finite(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _finite(v, f"{where}[{i}]")


_VALIDATOR = None


def _validator():
    """The schema's validator, built once (``jsonschema.validate`` re-checks the schema itself
    on every call, 50 times slower than validating a result)."""
    global _VALIDATOR
    if _VALIDATOR is None:
        import jsonschema

        cls = jsonschema.validators.validator_for(RESULT_SCHEMA)
        cls.check_schema(RESULT_SCHEMA)
        _VALIDATOR = cls(RESULT_SCHEMA)
    return _VALIDATOR


def validate_result(result: dict[str, Any]) -> None:
    """Schema check plus what a schema cannot say: finite numbers, summary == metrics."""
    import jsonschema

    _finite(result)
    try:
        error = jsonschema.exceptions.best_match(_validator().iter_errors(result))
        if error is not None:
            raise error
    except jsonschema.ValidationError as exc:
        path = ".".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ValidationError(f"result does not match schema v1 at {path}: {exc.message}") from None
    for name, value in result["summary"].items():
        metric = result["metrics"].get(name)
        if metric is None:
            raise ValidationError(f"summary column '{name}' has no entry in metrics")
        if metric["value"] != value:
            raise ValidationError(f"summary '{name}' = {value} but metrics['{name}'].value = {metric['value']}")


def write_result(result: dict[str, Any], path: str | Path) -> Path:
    validate_result(result)
    path = Path(path)
    atomic_write_text(path, json.dumps(result, indent=2, sort_keys=False, allow_nan=False) + "\n")
    return path


def read_result(path: str | Path) -> dict[str, Any]:
    """A result file, read strictly (see :func:`memorybench.core.io.read_json_strict`) and validated."""
    data = read_json_strict(path, "result file")
    validate_result(data)
    return data
