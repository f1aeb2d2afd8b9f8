"""Files on disk: one atomic write and one strict JSON reader for the whole package.

An atomic write goes to a temporary file in the destination folder, is flushed to disk and
then renamed over the destination, so a killed process leaves either the old file or the
new one, never half of one. The strict reader refuses what ``json`` would silently accept:
NaN and Infinity tokens, numbers that overflow to infinity, and keys given twice (the last
one would win, so a checked value could hide behind a duplicate).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from memorybench.errors import ValidationError

_UMASK = os.umask(0)  # reading the umask means setting it: once, at import
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` (parents created) so that readers never see a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results and pages are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """JSON text (no NaN/Infinity) with a final newline, written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


def _reject_constant(token: str) -> float:
    raise ValueError(f"non-finite number {token} (NaN and Infinity are not JSON numbers)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"non-finite number {text} (overflows to {value})")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key '{key}' appears twice in one object")
        out[key] = value
    return out


def loads_strict(text: str) -> Any:
    """JSON without NaN/Infinity, overflowing numbers or duplicate keys."""
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                      object_pairs_hook=_unique_keys)


def read_json_strict(path: str | os.PathLike, what: str = "file") -> Any:
    """``loads_strict`` of a UTF-8 file; any failure is one ``ValidationError`` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValidationError(f"{what} '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{what} '{path}' cannot be read: {exc}") from None
    try:
        return loads_strict(text)
    except RecursionError:
        raise ValidationError(f"{what} '{path}' is nested too deeply to be a memorybench file") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError too
        raise ValidationError(f"{what} '{path}' is not valid JSON: {exc}") from None
