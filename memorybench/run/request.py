"""A run request: everything ``memorybench run`` was asked to do, parsed and checked once.

The command line (or a script) builds one ``RunRequest``: the suite with its options
applied, the methods with their settings (one method is a list of one), the local data
paths, where results go and how to run (device, dtype, cache). Every name, setting and
path that can be checked without loading a model is checked here, so a mistake is one
line before any work starts; the runner then takes the request as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memorybench.api.method import METHODS, Method
from memorybench.errors import ConfigError
from memorybench.model.pipeline import check_model_folder
from memorybench.suites.smoke import SmokeOverrides, apply_smoke
from memorybench.suites.spec import Suite, load_suite, with_options


@dataclass
class RunOptions:
    """How to run (not what): model folder, cache, device, batch size, provenance extras."""

    model_path: str | None = None
    output: str | None = None  # the result file of a single-method call of ``run``
    cache_dir: str | None = None
    device: str = "cpu"
    dtype: str | None = None
    batch_size: int = 32
    progress: bool = True
    command: list[str] | None = None
    extra_provenance: dict[str, Any] = field(default_factory=dict)
    data_paths: dict[str, str] = field(default_factory=dict)  # --data KEY=PATH: local data the suite reads
    shard: tuple[int, int] | None = None  # --shard I/N: this process generates its share, no metrics
    batch_invariant: bool = False  # --batch-invariant: bit-identical images whatever the batch size
    metrics_only: bool = False  # --metrics-only: evaluate the cached images; refuse while any is missing


@dataclass(frozen=True)
class MethodSpec:
    """One method of a request and its ``--set`` settings (already checked against its Config)."""

    name: str
    settings: dict[str, Any]

    def build(self) -> Method:
        return METHODS.get(self.name).from_settings(self.settings)


@dataclass
class RunRequest:
    suite: Suite  # with --suite-option values applied
    methods: list[MethodSpec]  # in run order, ``none`` first
    options: RunOptions
    output: Path | None = None  # one result file (only with one method)
    output_dir: Path | None = None  # one result per method, named METHOD-CONFIG8.json

    def output_path(self, method: Method) -> Path:
        if self.output is not None:
            return self.output
        name = f"{method.name}-{method.config_sha256()[:8]}.json"
        return (self.output_dir or Path("results") / self.suite.name) / name


def parse_method_list(spec: str) -> list[str]:
    """``all`` -> every built-in method; ``a,b`` -> those; ``none`` always first (the
    others' cost baseline is then warm in the cache)."""
    if spec.strip() == "all":
        names = METHODS.builtin_names()
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
        if not names:
            raise ConfigError(f"--method '{spec}' names no method")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"--method lists {', '.join(dupes)} more than once")
        for name in names:
            if name not in METHODS:
                METHODS.get(name)  # raises the did-you-mean error
    return sorted(names, key=lambda n: n != "none")


def split_settings(settings: dict[str, Any], names: list[str]) -> dict[str, dict[str, Any]]:
    """``{"wanda-prune:sparsity": 0.02}`` -> per-method settings (plain keys only with one method)."""
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in settings.items():
        method, sep, key_name = key.partition(":")
        if not sep:
            if len(names) != 1:
                raise ConfigError(f"--set {key}=...: with several methods, name the method: --set METHOD:{key}=VALUE")
            out[names[0]][key] = value
            continue
        if method not in out:
            raise ConfigError(f"--set {key}=...: method '{method}' is not among the methods run ({', '.join(names)})")
        out[method][key_name] = value
    return out


def check_destinations(suite: Suite, output: str | None, output_dir: str | None, options: RunOptions) -> None:
    """Where results and images will be written, checked now (one line, before any model
    loads) rather than after the whole generation; and a batch size that can make progress."""
    from memorybench.core.io import check_writable_destination

    if isinstance(options.batch_size, bool) or not isinstance(options.batch_size, int) or options.batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {options.batch_size!r}")
    if output:
        check_writable_destination(output, "--output")
    else:
        check_writable_destination(output_dir or Path("results") / suite.name, "--output-dir", is_dir=True)
    if options.cache_dir:
        check_writable_destination(options.cache_dir, "--cache-dir", is_dir=True)


def build_run_request(suite: str, methods: str, settings: dict[str, Any] | None = None,
                      suite_options: dict[str, Any] | None = None, output: str | None = None,
                      output_dir: str | None = None, options: RunOptions | None = None,
                      smoke: SmokeOverrides | None = None) -> RunRequest:
    """Parse and check a run: suite (name or YAML) and options, smoke flags, method list and
    settings, outputs."""
    options = options or RunOptions()
    loaded = apply_smoke(with_options(load_suite(suite), suite_options or {}), smoke)
    if options.shard is not None and options.metrics_only:
        raise ConfigError("--shard generates a share of the images and --metrics-only evaluates them all: "
                          "use one or the other")
    names = parse_method_list(methods)
    if output and len(names) > 1:
        raise ConfigError("--output names one file: with several methods use --output-dir DIR")
    per_method = split_settings(settings or {}, names)
    specs = [MethodSpec(n, per_method[n]) for n in names]
    for spec in specs:
        spec.build()  # unknown keys and wrong types fail here, before any model loads
    if options.model_path:
        check_model_folder(Path(options.model_path).expanduser())
    check_destinations(loaded, output, output_dir, options)
    if suite_options:
        options.extra_provenance = {**options.extra_provenance, "suite_options": dict(suite_options)}
    return RunRequest(loaded, specs, options, Path(output) if output else None,
                      Path(output_dir) if output_dir else None)


def parse_shard(spec: str | None) -> tuple[int, int] | None:
    """``--shard I/N`` -> (I, N) with 0 <= I < N: shard I of N independent processes."""
    if spec is None:
        return None
    index, sep, count = spec.partition("/")
    try:
        i, n = int(index), int(count)
    except ValueError:
        i = n = -1
    if not sep or n < 1 or not 0 <= i < n:
        raise ConfigError(f"--shard '{spec}': expected I/N with 0 <= I < N, e.g. --shard 0/4")
    return i, n
