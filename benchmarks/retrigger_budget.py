"""Re-trigger curve of one or more methods over the attack budget: hidden or removed?

Runs a suite with a re-trigger stage (default ``tinyworld-robust-v1``) once per budget and
method, with every other attack option fixed (``--suite-option``), and prints per row
``sscd_mem``, ``retrigger_sscd_mem`` (the attacker keeps the better of its start and what it
found), the attacked generations alone, ``retrigger_copy_rate`` and the perturbation found.
A method that removes a memorized image stays flat as the budget grows; one that hides it
climbs back towards ``none``. Writes STEM.json (rows with the suite hash, config hash and
weights of each point) and STEM.png (``retrigger_sscd_mem`` and the attacked-only mean against
the budget, one line per method).

Example (a smoke-sized curve: first 4 memorized prompts, 4 seeds each):

    .venv/bin/python benchmarks/retrigger_budget.py --method none --method wanda-prune:sparsity=0.25 \\
        --budgets 0 0.05 0.1 0.25 1.0 --suite-option retrigger_steps=60 --suite-option retrigger_lr=0.05 \\
        --limit-prompts 4 --seeds 4 --out benchmarks/results/retrigger/budget
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from memorybench.core.config import parse_set_options
from memorybench.core.provenance import collect
from memorybench.run.request import RunOptions
from memorybench.run.runner import run
from memorybench.suites.smoke import SmokeOverrides, apply_smoke
from memorybench.suites.spec import load_suite, with_options


def parse_method(spec: str) -> tuple[str, dict]:
    """``name`` or ``name:key=value,key=value`` (values read as JSON, like ``--set``)."""
    name, _, rest = spec.partition(":")
    return name, parse_set_options([kv for kv in rest.split(",") if kv])


def curve(suite_name: str, methods: list[tuple[str, dict]], budgets: list[float], fixed: dict,
          smoke: SmokeOverrides, options: RunOptions) -> list[dict]:
    base = load_suite(suite_name)
    if not any(k.startswith("retrigger_") for k in base.options):
        raise SystemExit(f"suite '{suite_name}' has no re-trigger stage (no retrigger_* options)")
    rows = []
    for name, settings in methods:
        for budget in budgets:
            suite = apply_smoke(with_options(base, {**fixed, "retrigger_budget": float(budget)}), smoke or None)
            result = run(suite, name, settings, options)
            m = result["metrics"]
            rows.append({
                "method": name, "config": result["method"]["config"], "budget": float(budget),
                "sscd_mem": m["sscd_mem"]["value"], "retrigger_sscd_mem": m["retrigger_sscd_mem"]["value"],
                "retrigger_ci95": m["retrigger_sscd_mem"].get("ci95"),
                "attacked_only": m["retrigger_sscd_mem"]["protocol"].get("attacked_only_mean"),
                "copy_rate_mem": m["copy_rate_mem"]["value"], "retrigger_copy_rate": m["retrigger_copy_rate"]["value"],
                "delta_rel": m["retrigger_delta_rel"]["value"], "seconds_per_prompt": m["retrigger_seconds"]["value"],
                # each point traceable to what made it
                "suite_sha256": result["suite"]["sha256"], "config_sha256": result["method"]["config_sha256"],
                "weights_sha256": result["model"]["weights_sha256"],
            })
    return rows


def table(rows: list[dict]) -> str:
    lines = [f"{'method':<24s} {'budget':>6s} {'sscd_mem':>8s} {'retrigger':>9s} {'attacked':>8s} "
             f"{'copy':>5s} {'rt copy':>7s} {'delta':>6s} {'s/prompt':>8s}"]
    for r in rows:
        attacked = float("nan") if r["attacked_only"] is None else r["attacked_only"]
        lines.append(f"{r['method']:<24s} {r['budget']:6.3f} {r['sscd_mem']:8.3f} {r['retrigger_sscd_mem']:9.3f} "
                     f"{attacked:8.3f} {r['copy_rate_mem']:5.2f} {r['retrigger_copy_rate']:7.2f} "
                     f"{r['delta_rel']:6.3f} {r['seconds_per_prompt']:8.1f}")
    return "\n".join(lines)


def plot(rows: list[dict], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.5))
    for i, name in enumerate(dict.fromkeys(r["method"] for r in rows)):
        pts = sorted((r for r in rows if r["method"] == name), key=lambda r: r["budget"])
        color = f"C{i}"
        xs = [r["budget"] for r in pts]
        ax.plot(xs, [r["retrigger_sscd_mem"] for r in pts], "o-", color=color, label=f"{name}: retrigger_sscd_mem")
        ax.plot(xs, [r["attacked_only"] for r in pts], "x--", color=color, alpha=0.7, label=f"{name}: attacked only")
        ax.axhline(pts[0]["sscd_mem"], color=color, lw=0.8, ls=":")  # the method on its own prompts
    ax.set_xlabel("attack budget (relative L2 radius of the embedding perturbation)")
    ax.set_ylabel("SSCD to the training image (higher = more copying)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)  # main() made the folder
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", action="append", required=True, help="NAME or NAME:key=value,... (repeatable)")
    ap.add_argument("--budgets", nargs="+", type=float, required=True)
    ap.add_argument("--suite", default="tinyworld-robust-v1")
    ap.add_argument("--suite-option", action="append", default=[], metavar="KEY=VALUE",
                    help="other attack options held fixed, e.g. retrigger_steps=60")
    ap.add_argument("--limit-prompts", type=int)
    ap.add_argument("--seeds", type=int)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default="retrigger-budget", help="output stem: writes STEM.json and STEM.png")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)

    fixed = parse_set_options(args.suite_option)
    if "retrigger_budget" in fixed:
        ap.error("give the budgets with --budgets, not --suite-option retrigger_budget")
    smoke = SmokeOverrides(limit_prompts=args.limit_prompts, seeds=args.seeds)
    options = RunOptions(cache_dir=args.cache_dir, progress=not args.no_progress, command=sys.argv)
    methods = [parse_method(m) for m in args.method]
    rows = curve(args.suite, methods, args.budgets, fixed, smoke, options)
    print(table(rows))
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    record = {"suite": args.suite, "fixed_options": fixed, "smoke": smoke.flags(), "rows": rows,
              "provenance": collect(sys.argv)}
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1))
    title = (f"re-trigger attack over its budget on {args.suite}"
             + (f" ({', '.join(f'{k} {v}' for k, v in smoke.flags().items())})" if smoke else "")
             + f"\n{', '.join(f'{k}={v}' for k, v in fixed.items())}; dotted: sscd_mem without attack")
    plot(rows, title, stem.with_suffix(".png"))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
