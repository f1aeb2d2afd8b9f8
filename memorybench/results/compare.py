"""Compare two results: what differs in how they were made, and each summary column.

Two uses: checking that a rerun (another GPU, precision, commit) reproduces a published
entry, and asking whether a method's change against a baseline is more than prompt noise.
For a column that is a mean over prompts (its ``per_prompt`` values average to its value),
the difference gets a paired percentile bootstrap CI over the prompts both results share,
so prompt-to-prompt spread that both runs have in common cancels. Columns of another
shape (AUROC, FID, pooled shares) are shown without one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from memorybench.core.io import read_json_strict
from memorybench.errors import ConfigError
from memorybench.metrics.stats import bootstrap_ci
from memorybench.results.leaderboard import find_entry, load_leaderboard
from memorybench.results.record import validate_result

# (label, path into the result): the fields that decide whether two numbers are comparable
MADE_WITH = (
    ("suite", ("suite", "name")), ("suite version", ("suite", "version")), ("suite sha256", ("suite", "sha256")),
    ("model", ("model", "id")), ("weights sha256", ("model", "weights_sha256")), ("dtype", ("model", "dtype")),
    ("sampler", ("model", "sampler")), ("steps", ("model", "steps")), ("guidance", ("model", "guidance")),
    ("method", ("method", "name")), ("method config sha256", ("method", "config_sha256")),
    ("seeds", ("provenance", "seeds")), ("gpu", ("provenance", "hardware", "gpu")),
    ("cpu", ("provenance", "hardware", "cpu")), ("torch", ("provenance", "packages", "torch")),
    ("memorybench commit", ("provenance", "memorybench_commit")),
    ("uncommitted source", ("provenance", "memorybench_dirty")),
)


def _get(d: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def load_comparable(path: str | Path, method: str | None = None, config_sha256: str | None = None) -> dict[str, Any]:
    """A result from a result JSON, or from a leaderboard JSON's entry for ``method``."""

    data = read_json_strict(path, "result or leaderboard file")
    if isinstance(data, dict) and "entries" in data:
        if not method:
            raise ConfigError(f"'{path}' is a leaderboard: name the entry with --method")
        data = find_entry(load_leaderboard(path), method, config_sha256)["result"]
    validate_result(data)
    return data


def _paired_ci(a: dict[str, Any], b: dict[str, Any], n_resamples: int, seed: int):
    """(n prompts, CI of mean(b - a)) where both columns are means over the same prompts, else None."""
    pa, pb = a.get("per_prompt"), b.get("per_prompt")
    if not isinstance(pa, dict) or not isinstance(pb, dict):
        return None
    for metric, per in ((a, pa), (b, pb)):
        if not per or not np.isclose(np.mean(list(per.values())), metric["value"], rtol=1e-9, atol=1e-12):
            return None  # not a mean over prompts (a pooled share, say): a paired mean says nothing about it
    shared = sorted(pa.keys() & pb.keys())
    if len(shared) < 2:
        return None
    diff = np.array([pb[p] - pa[p] for p in shared], dtype=np.float64)
    lo, hi = bootstrap_ci(diff, n_resamples=n_resamples, seed=seed)
    return len(shared), [lo, hi]


def compare_results(a: dict[str, Any], b: dict[str, Any], n_resamples: int = 2000, seed: int = 0) -> dict[str, Any]:
    """How ``a`` and ``b`` were made (every field of MADE_WITH) and each shared summary column."""
    made = [{"field": label, "a": _get(a, path), "b": _get(b, path), "same": _get(a, path) == _get(b, path)}
            for label, path in MADE_WITH]
    columns = []
    for name in [k for k in a["summary"] if k in b["summary"]]:
        ma, mb = a["metrics"].get(name, {}), b["metrics"].get(name, {})
        va, vb = a["summary"][name], b["summary"][name]
        paired = _paired_ci(ma, mb, n_resamples, seed) if ma and mb else None
        row = {"column": name, "a": va, "b": vb, "difference": vb - va,
               "relative": (vb - va) / va if va else None,
               "higher_is_better": ma.get("higher_is_better"), "a_ci95": ma.get("ci95"), "b_ci95": mb.get("ci95"),
               "paired_n": paired[0] if paired else None, "paired_ci95": paired[1] if paired else None}
        ci = row["paired_ci95"]
        row["paired_ci_excludes_zero"] = None if not ci or None in ci else bool(ci[0] > 0 or ci[1] < 0)
        columns.append(row)
    return {"made_with": made, "columns": columns,
            "only_in_a": [k for k in a["summary"] if k not in b["summary"]],
            "only_in_b": [k for k in b["summary"] if k not in a["summary"]],
            "bootstrap": {"unit": "prompt", "resamples": n_resamples, "seed": seed, "interval": "percentile 95%",
                          "statistic": "mean over shared prompts of (b - a)"}}


def render(comparison: dict[str, Any], label_a: str, label_b: str) -> str:
    lines = [f"A: {label_a}", f"B: {label_b}"]
    differing = [m for m in comparison["made_with"] if not m["same"]]
    lines.append(f"made with: {len(comparison['made_with']) - len(differing)} of {len(comparison['made_with'])} "
                 "fields the same" + ("; differing:" if differing else ""))
    for m in differing:
        lines.append(f"  {m['field']:22s} A {m['a']}  |  B {m['b']}")
    if any(m["field"] in ("suite sha256", "weights sha256") for m in differing):
        lines.append("  (another suite or other weights: the columns measure different things)")
    lines.append(f"{'column':22s} {'A':>9s} {'B':>9s} {'B-A':>9s} {'rel':>6s}  paired 95% CI of B-A")
    for c in comparison["columns"]:
        rel = f"{c['relative'] * 100:+.0f}%" if c["relative"] is not None else ""
        ci = c["paired_ci95"]
        paired = (f"[{ci[0]:+.4f}, {ci[1]:+.4f}] n={c['paired_n']}" + ("  *" if c["paired_ci_excludes_zero"] else "")
                  if ci and None not in ci else "-")
        lines.append(f"{c['column']:22s} {c['a']:9.4f} {c['b']:9.4f} {c['difference']:+9.4f} {rel:>6s}  {paired}")
    lines.append("* the paired CI excludes 0: more than prompt-to-prompt noise (seeds are fixed, so this is not "
                 "a test across seeds)")
    for side in ("a", "b"):
        if comparison[f"only_in_{side}"]:
            lines.append(f"only in {side.upper()}: {', '.join(comparison[f'only_in_{side}'])}")
    return "\n".join(lines)
