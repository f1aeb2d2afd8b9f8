"""One registry type for every kind of plugin: methods, detectors, metrics, data sources.

Three ways in, in order of precedence:
1. built-ins, known by name from a table of ``"module:attr"`` placeholders
   (:mod:`memorybench.api.builtins`) and imported on first use, so ``memorybench list``
   imports nothing heavy;
2. third-party packages through the entry-point group of each registry
   (``memorybench.methods``, ``memorybench.detectors``, ``memorybench.metrics``,
   ``memorybench.data_sources``);
3. ``--plugins MODULE_OR_FILE.py`` for code that is not packaged.

Built-ins win name collisions. A plugin that fails to import is remembered with its
error: listing names it, asking for it raises ``PluginError``. Each registry instance lives
next to the type it holds (``METHODS`` in :mod:`memorybench.api.method`, and so on).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import re
import sys
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from memorybench.errors import PluginError, UnknownNameError

T = TypeVar("T")

# A plugin's name becomes part of file names (results, cache entries) and page anchors.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def check_plugin_name(name: Any, kind: str) -> str:
    """Refuse a name that could leave a folder once it is part of a path ('/', '..') or is no name."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise PluginError(f"{kind} name {name!r} is not allowed: use 1-100 letters, digits, '.', '_' or '-', "
                          "starting with a letter or digit, without '..' or path separators")
    return name


@dataclass
class _Entry:
    name: str
    source: str  # "builtin", "entry-point:<dist>", "plugin:<module>"
    obj: Any = None  # the registered object once imported
    placeholder: str | None = None  # "module:attr" not yet imported
    error: str | None = None  # import error of a broken plugin


@dataclass
class Registry(Generic[T]):
    """Name -> object map with lazy placeholders and did-you-mean errors."""

    kind: str  # "method", "detector", "metric"
    group: str  # entry-point group
    validator: Callable[[Any], None] | None = None  # rejects malformed objects at registration
    builtins: dict[str, str] = field(default_factory=dict)  # name -> "module:attr" of built-ins
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _entry_points_loaded: bool = False

    def __post_init__(self) -> None:
        for name, placeholder in self.builtins.items():
            self.register_lazy(name, placeholder, source="builtin")

    # -- registration -------------------------------------------------------------
    def register(self, name: str, obj: T, source: str = "builtin") -> T:
        check_plugin_name(name, self.kind)
        own_name = getattr(obj, "name", None)  # what results and cache paths are named after
        if isinstance(own_name, str) and own_name != name:
            check_plugin_name(own_name, self.kind)
        if self.validator is not None:
            self.validator(obj)
        existing = self._entries.get(name)
        if existing is not None and existing.source == "builtin" and source != "builtin":
            warnings.warn(f"{self.kind} '{name}' from {source} ignored: a built-in has that name", stacklevel=3)
            return obj
        if existing is not None and existing.obj is not None and existing.obj is not obj and source == "builtin":
            raise ValueError(f"built-in {self.kind} '{name}' registered twice")
        self._entries[name] = _Entry(name=name, source=source, obj=obj)
        return obj

    def register_lazy(self, name: str, placeholder: str, source: str = "builtin") -> None:
        try:
            check_plugin_name(name, self.kind)
        except PluginError as exc:
            if source == "builtin":
                raise
            warnings.warn(f"{self.kind} from {source} ignored: {exc}", stacklevel=2)
            return
        if name in self._entries and self._entries[name].source == "builtin" and source != "builtin":
            return
        self._entries[name] = _Entry(name=name, source=source, placeholder=placeholder)

    def decorator(self, name: str | None = None) -> Callable[[T], T]:
        def wrap(obj: T) -> T:
            self.register(name or getattr(obj, "name"), obj, source=current_source())
            return obj

        return wrap

    # -- lookup -------------------------------------------------------------------
    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def broken(self) -> dict[str, str]:
        self._load_entry_points()
        return {n: e.error for n, e in self._entries.items() if e.error}

    def get(self, name: str) -> T:
        self._load_entry_points()
        entry = self._entries.get(name)
        if entry is None:
            raise UnknownNameError(self._unknown_message(name))
        if entry.error:
            raise PluginError(f"{self.kind} '{name}' ({entry.source}) failed to import: {entry.error}")
        if entry.obj is None and entry.placeholder:
            module_name, _, attr = entry.placeholder.partition(":")
            _SOURCE_STACK.append(entry.source)  # decorators in the module register under it
            try:
                module = importlib.import_module(module_name)
                obj = getattr(module, attr) if attr else None
            except (Exception, SystemExit) as exc:  # a broken plugin must name itself, not crash listing
                entry.error = _import_failure(exc)
                raise PluginError(
                    f"{self.kind} '{name}' ({entry.source}) failed to import: {entry.error}"
                ) from exc
            finally:
                _SOURCE_STACK.pop()
            # importing may have registered it by decorator; otherwise take the attribute
            entry = self._entries[name]
            if entry.obj is None:
                entry.obj = obj
                entry.placeholder = None
        return entry.obj

    def source(self, name: str) -> str:
        """Where ``name`` came from: "builtin", "entry-point:<dist>" or "plugin:<module>"
        (without importing it)."""
        self._load_entry_points()
        if name not in self._entries:
            raise UnknownNameError(self._unknown_message(name))
        return self._entries[name].source

    def is_builtin(self, name: str) -> bool:
        return self.source(name) == "builtin"

    def builtin_names(self) -> list[str]:
        return [n for n in self.names() if self.is_builtin(n)]

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._entries

    def _unknown_message(self, name: str) -> str:
        names = sorted(self._entries)
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        listing = f" Known {self.kind}s: {', '.join(names)}." if names else ""
        return f"unknown {self.kind} '{name}'.{hint}{listing}"

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            dist = getattr(getattr(ep, "dist", None), "name", None) or "unknown"
            self.register_lazy(ep.name, ep.value, source=f"entry-point:{dist}")


def _import_failure(exc: BaseException) -> str:
    """One line on why a plugin did not import (a plugin that exits is an error, not a way out)."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r}) while being imported"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"


# The source label given to objects registered by decorator while a plugin loads.
_SOURCE_STACK: list[str] = []


def current_source() -> str:
    """The source label for an object registered right now (by a decorator or by hand)."""
    return _SOURCE_STACK[-1] if _SOURCE_STACK else "builtin"


def load_plugin(spec: str) -> None:
    """Import a plugin module by dotted name or a ``.py`` file by path.

    Importing runs the plugin's ``@register_method`` (etc.) decorators. A failure is
    a hard ``PluginError`` because the user asked for this plugin by name.
    """
    label = f"plugin:{spec}"
    _SOURCE_STACK.append(label)
    try:
        path = Path(spec)
        if spec.endswith(".py"):
            if not path.is_file():
                raise PluginError(f"plugin file '{spec}' does not exist")
            module_name = f"memorybench_plugin_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(module_name, path)
            if module_spec is None or module_spec.loader is None:
                raise PluginError(f"plugin file '{spec}' cannot be imported")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[module_name] = module
            try:
                module_spec.loader.exec_module(module)
            except (Exception, SystemExit) as exc:
                sys.modules.pop(module_name, None)
                raise PluginError(f"plugin '{spec}' failed to import: {_import_failure(exc)}") from exc
        else:
            try:
                importlib.import_module(spec)
            except (Exception, SystemExit) as exc:
                raise PluginError(f"plugin '{spec}' failed to import: {_import_failure(exc)}") from exc
    finally:
        _SOURCE_STACK.pop()
