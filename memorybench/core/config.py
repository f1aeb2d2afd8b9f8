"""Dataclass configs that round-trip through JSON and reject bad input by name.

A method's config is a plain ``@dataclass``. ``from_dict`` refuses unknown keys (with a
did-you-mean) and values of the wrong type, so a misspelt ``--set` never silently runs
the default. ``config_sha256`` is the identity of a config in caches and results.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import types
import typing
from typing import Any, ClassVar

from memorybench.errors import ConfigError


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the form that gets hashed."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sha256_json(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; allow int -> float, list -> tuple."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in args:
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if tp is type(None):
        if value is None:
            return None
        raise ConfigError(f"{where}: expected null, got {value!r}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{where}: must be one of {', '.join(repr(a) for a in args)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):  # --set x=NaN / Infinity parse as JSON numbers
                raise ConfigError(f"{where}: must be a finite number, got {value!r}")
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{where}: unsupported value {value!r} for type {_type_name(tp)}")


def config_from_dict(cls: type, data: dict[str, Any], owner: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys and wrong types."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, dict):
        raise ConfigError(f"{owner}: expected a mapping of settings, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.5)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            known = f" Known keys: {', '.join(sorted(fields))}." if fields else " It takes no settings."
            raise ConfigError(f"{owner}: unknown key '{key}'.{hint}{known}")
    kwargs = {k: _coerce(v, hints[k], f"{owner}: {k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:  # __post_init__ range checks
        raise ConfigError(f"{owner}: {exc}") from exc


def config_to_dict(config: Any) -> dict[str, Any]:
    d = dataclasses.asdict(config)
    return json.loads(canonical_json(d))  # tuples -> lists, proves JSON-serialisable


def config_sha256(config: Any) -> str:
    return sha256_json(config_to_dict(config))


def parse_set_options(pairs: list[str] | None) -> dict[str, Any]:
    """``["k=v", ...]`` -> dict. Values are read as JSON when they parse (numbers, true,
    lists), else kept as strings, so ``--set lr=0.05 --set mode=early`` both work."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got '{pair}'")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out[key] = value
    return out


@dataclasses.dataclass
class NoConfig:
    """A plugin without settings."""


class ConfiguredPlugin:
    """What methods and detectors share: a dataclass ``Config`` built from ``--set``
    settings (unknown keys and wrong types rejected by name) and hashed into results."""

    name: ClassVar[str] = ""
    plugin_kind: ClassVar[str] = "plugin"  # "method" | "detector": names the owner in errors
    Config: ClassVar[type] = NoConfig
    # Where the defaults come from (paper, public code), recorded in the result.
    reference: ClassVar[str] = ""

    def __init__(self, config: Any = None):
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise ConfigError(f"{self.plugin_kind} '{self.name}': config must be a {self.Config.__name__}")

    @classmethod
    def from_settings(cls, settings: dict[str, Any] | None = None):
        return cls(config_from_dict(cls.Config, settings or {}, owner=f"{cls.plugin_kind} '{cls.name}'"))

    def config_dict(self) -> dict[str, Any]:
        return config_to_dict(self.config)

    def config_sha256(self) -> str:
        return sha256_json(self.config_dict())  # the recorded config is the hashed one
