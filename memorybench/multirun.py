"""Run several methods on one suite: ``memorybench run --suite S --method all`` (or a list).

Every method writes its own result; all share one generation cache, so ``none`` (run first)
is generated once and served from the cache afterwards. A method that fails is recorded
and the next one runs; training-time methods are skipped on suites that do not fine-tune.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, MemorybenchError
from .registry import METHODS
from .suite import Suite


@dataclass
class MethodOutcome:
    method: str
    status: str  # "ok", "failed", "skipped"
    output: str | None = None
    note: str = ""
    result: dict[str, Any] | None = None


def method_names(spec: str) -> list[str]:
    """``all`` -> every built-in method, ``none`` first; ``a,b`` -> those, in that order."""
    if spec.strip() == "all":
        names = [n for n in METHODS.names() if METHODS._entries[n].source == "builtin"]
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
    return sorted(names, key=lambda n: n != "none")  # none first: the others' cost baseline is warm


def split_settings(settings: dict[str, Any], names: list[str]) -> dict[str, dict[str, Any]]:
    """``{"wanda-prune:sparsity": 0.02}`` -> per-method settings (plain keys only with one method)."""
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    for key, value in settings.items():
        method, sep, field = key.partition(":")
        if not sep:
            if len(names) != 1:
                raise ConfigError(f"--set {key}=...: with several methods, name the method: --set METHOD:{key}=VALUE")
            out[names[0]][key] = value
            continue
        if method not in out:
            raise ConfigError(f"--set {key}=...: method '{method}' is not among the methods run ({', '.join(names)})")
        out[method][field] = value
    return out


def suite_fine_tunes(suite: Suite) -> bool:
    """Whether the suite fine-tunes the model (only there do training-time methods apply):
    its data source is a fine-tuning set (``finetune-dup``, ...) or its spec has a
    ``finetune`` entry."""
    spec = suite.to_dict()
    return (str(spec.get("data", "")).startswith("finetune") or bool(spec.get("finetune"))
            or bool((spec.get("options") or {}).get("finetune")))


def run_methods(suite: Suite, names: list[str], settings: dict[str, dict[str, Any]], options: Any,
                output_dir: str | Path | None = None, debug: bool = False) -> list[MethodOutcome]:
    """Run each method in turn with ``options`` (a ``RunOptions``); never stops at a failure."""
    from .runner import default_output_path, run

    outcomes = []
    for name in names:
        try:
            cls = METHODS.get(name)
            if cls.kind == "training" and not suite_fine_tunes(suite):
                outcomes.append(MethodOutcome(name, "skipped", note=(
                    f"kind 'training': it fine-tunes the model, and suite '{suite.name}' has no fine-tuning "
                    "step; run it on a fine-tuning suite (e.g. finetune-dup-v1)")))
                continue
            method = cls.from_settings(settings.get(name) or {})
            path = default_output_path(suite, method)
            if output_dir is not None:
                path = Path(output_dir) / path.name
            result = run(suite, name, settings.get(name) or {}, replace(options, output=str(path)))
            outcomes.append(MethodOutcome(name, "ok", str(path), result=result))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # record and go on: one broken method must not stop the others
            if debug:
                traceback.print_exc()
            what = str(exc) if isinstance(exc, MemorybenchError) else f"{type(exc).__name__}: {exc}"
            outcomes.append(MethodOutcome(name, "failed", note=what.splitlines()[0] if what else type(exc).__name__))
    return outcomes


def summary_lines(outcomes: list[MethodOutcome], columns: list[str]) -> list[str]:
    """One line per method: status, its first summary columns and its cost against none."""
    lines = []
    for o in outcomes:
        if o.status != "ok" or o.result is None:
            lines.append(f"{o.status:<7} {o.method}: {o.note}")
            continue
        values = "  ".join(f"{c}={o.result['summary'][c]:.4f}" for c in columns if c in o.result["summary"])
        ratio = (o.result["cost"].get("vs_none") or {}).get("seconds_per_image_ratio")
        cost = f"  cost x{ratio:.2f} vs none" if ratio is not None else ""
        lines.append(f"{o.status:<7} {o.method}: {values}{cost}  -> {o.output}")
    return lines
