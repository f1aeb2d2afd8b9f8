"""Local paths a suite reads (``memorybench run --data KEY=PATH``), checked up front.

A suite that reads user data declares each input: its key, whether it is a file or a
folder, and what it must contain. Every check runs before the model loads, so a missing
file costs seconds, not a long generation run. Paths never go into results (only the
sha256 of what was read).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from memorybench.errors import ConfigError, DataError


@dataclass(frozen=True)
class InputSpec:
    key: str
    kind: str  # "file", "folder" or "any" (a file or a folder)
    what: str  # what it must contain, for messages
    required: bool = True


def check_inputs(suite_name: str, specs: list[InputSpec], paths: dict[str, str]) -> dict[str, Path]:
    """Resolve ``paths`` against ``specs``: unknown keys, missing required inputs and paths
    that do not exist each fail with one line naming the input and what it must hold."""
    by_key = {s.key: s for s in specs}
    unknown = sorted(set(paths) - set(by_key))
    if unknown:
        raise ConfigError(f"suite '{suite_name}' takes no --data {unknown[0]}; its inputs: {', '.join(by_key)}")
    out: dict[str, Path] = {}
    for spec in specs:
        if spec.key not in paths:
            if spec.required:
                raise DataError(f"suite '{suite_name}' needs --data {spec.key}=PATH: {spec.what}")
            continue
        path = Path(paths[spec.key]).expanduser()
        if not path.exists():
            raise DataError(f"--data {spec.key}: '{path}' does not exist (expected {spec.what})")
        if spec.kind == "file" and not path.is_file():
            raise DataError(f"--data {spec.key}: '{path}' is not a file (expected {spec.what})")
        if spec.kind == "folder" and not path.is_dir():
            raise DataError(f"--data {spec.key}: '{path}' is not a folder (expected {spec.what})")
        out[spec.key] = path
    return out


__all__ = ["InputSpec", "check_inputs", "parse_data_paths"]


def parse_data_paths(pairs: list[str] | None) -> dict[str, str]:
    """``["prompts=/x.csv", ...]`` -> ``{"prompts": "/x.csv"}`` (values are paths, kept verbatim)."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key or not value:
            raise ConfigError(f"--data expects KEY=PATH, got '{pair}'")
        if key in out:
            raise ConfigError(f"--data {key} given twice")
        out[key] = value
    return out
