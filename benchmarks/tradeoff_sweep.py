"""Trade-off curve of a method over one hyperparameter: sscd_mem and clip_gen per setting.

Runs ``memorybench.runner.run`` for ``none`` and then for the method at each value of
``--param`` (other settings fixed with ``--set``), on the same suite, model and cache, prints
one row per setting with the change relative to ``none``, writes the rows as JSON and saves
a PNG plot (copy similarity against prompt fidelity, one point per setting, ``none`` marked).

Example (the bar a useful mitigation should clear: sscd_mem at least 30% below none, clip_gen within 10%):

    .venv/bin/python benchmarks/tradeoff_sweep.py --method attn-rescale --param c1 \\
        --values 1.1 1.25 2.0 4.0 --out benchmarks/results/tradeoff/attn-rescale

Values are read as JSON (``1.25``, ``true``, ``"linear"``) like ``--set``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from memorybench.core.config import parse_set_options
from memorybench.core.provenance import collect
from memorybench.api.method import METHODS
from memorybench.run.request import RunOptions
from memorybench.run.runner import run
from memorybench.suites.spec import load_suite

COLUMNS = ("sscd_mem", "clip_gen")


def parse_value(raw: str):
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def sweep(suite_name: str, method: str, param: str, values: list, fixed: dict, options: RunOptions) -> list[dict]:
    """Rows of {setting, sscd_mem, clip_gen, relative changes, result config hash}; row 0 is none."""
    suite = load_suite(suite_name)
    for value in values:  # reject a bad key or value before any generation
        METHODS.get(method).from_settings({**fixed, param: value})
    rows = []

    def row(result: dict, setting) -> dict:
        # each point traceable to the suite, weights and config that made it
        return {"method": result["method"]["name"], "setting": setting, **{c: result["summary"][c] for c in COLUMNS},
                "config_sha256": result["method"]["config_sha256"], "suite_sha256": result["suite"]["sha256"],
                "weights_sha256": result["model"]["weights_sha256"], "wall_s": result["provenance"].get("wall_seconds")}

    rows.append(row(run(suite, "none", {}, options), None))
    for value in values:
        rows.append(row(run(suite, method, {**fixed, param: value}, options), value))
    for row in rows:
        for c in COLUMNS:
            row[f"{c}_change"] = row[c] / rows[0][c] - 1.0
    return rows


def table(rows: list[dict], param: str) -> str:
    lines = [f"{param:>14s}  {'sscd_mem':>8s}  {'vs none':>8s}  {'clip_gen':>8s}  {'vs none':>8s}  bar"]
    for r in rows:
        label = "none" if r["method"] == "none" else json.dumps(r["setting"])
        meets = r["method"] != "none" and r["sscd_mem_change"] <= -0.30 and abs(r["clip_gen_change"]) <= 0.10
        lines.append(f"{label:>14s}  {r['sscd_mem']:8.3f}  {100 * r['sscd_mem_change']:+7.1f}%  {r['clip_gen']:8.3f}  "
                     f"{100 * r['clip_gen_change']:+7.1f}%  {'yes' if meets else ('' if r['method'] == 'none' else 'no')}")
    return "\n".join(lines)


def plot(rows: list[dict], method: str, param: str, suite: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.patches import Rectangle

    base, pts = rows[0], rows[1:]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    x0 = min([0.0] + [r["sscd_mem"] for r in rows])
    ax.add_patch(Rectangle((x0, 0.9 * base["clip_gen"]), 0.7 * base["sscd_mem"] - x0, 0.2 * base["clip_gen"],
                           color="tab:green", alpha=0.12, lw=0, label="30% less copying, CLIP within 10%"))
    ax.plot([r["sscd_mem"] for r in pts], [r["clip_gen"] for r in pts], "o-", color="tab:orange", label=method)
    for i, r in enumerate(pts):  # staggered labels stay readable when points nearly coincide
        ax.annotate(f"{param}={json.dumps(r['setting'])}", (r["sscd_mem"], r["clip_gen"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 4 - 9 * (i % 3)))
    ax.plot([base["sscd_mem"]], [base["clip_gen"]], "k*", ms=12, label="none")
    ax.set_xlabel("sscd_mem (copy similarity to the source, lower = less copying)")
    ax.set_ylabel("clip_gen (prompt fidelity, higher = better)")
    ax.set_title(f"{method} over {param} on {suite}\nbar (shaded): sscd_mem <= 70% of none, clip_gen within 10% of none",
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", required=True)
    ap.add_argument("--param", required=True, help="config key to sweep")
    ap.add_argument("--values", nargs="+", default=[], help="values of --param (JSON)")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="fixed method setting (repeatable)")
    ap.add_argument("--suite", default="tinyworld-v1")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=None, help="output stem: writes STEM.json and STEM.png")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--replot", action="store_true", help="only redraw STEM.png from STEM.json")
    args = ap.parse_args(argv)

    stem = Path(args.out or f"tradeoff-{args.method}-{args.param}")
    if args.replot:  # redraw from a sweep's JSON without generating anything
        rows = json.loads(stem.with_suffix(".json").read_text())["rows"]
        print(table(rows, args.param))
        plot(rows, args.method, args.param, args.suite, stem.with_suffix(".png"))
        print(f"wrote {stem.with_suffix('.png')}")
        return 0
    if not args.values:
        ap.error("--values is required unless --replot")
    options = RunOptions(cache_dir=args.cache_dir, progress=not args.no_progress, command=sys.argv)
    values = [parse_value(v) for v in args.values]
    rows = sweep(args.suite, args.method, args.param, values, parse_set_options(args.set), options)
    print(f"{args.method} on {args.suite}, sweeping {args.param}" + (f" with {args.set}" if args.set else ""))
    print(table(rows, args.param))
    stem.parent.mkdir(parents=True, exist_ok=True)
    record = {"suite": args.suite, "method": args.method, "param": args.param, "fixed": parse_set_options(args.set),
              "rows": rows, "provenance": collect(sys.argv)}
    stem.with_suffix(".json").write_text(json.dumps(record, indent=1))
    plot(rows, args.method, args.param, args.suite, stem.with_suffix(".png"))
    print(f"wrote {stem.with_suffix('.json')} and {stem.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
