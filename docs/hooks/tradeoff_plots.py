"""Draw the documentation's trade-off figures from the recorded sweeps (not a build hook).

Reads ``benchmarks/results/tradeoff/*.json`` (written by ``benchmarks/tradeoff_sweep.py``)
and writes one PNG per sweep into ``docs/assets/tradeoff/``: copy similarity to the source
(``sscd_mem``) against prompt fidelity (``clip_gen``), one point per setting, the ``none``
baseline as a star, and the target region (at least 30% less ``sscd_mem`` than ``none``
with ``clip_gen`` within 10% of it) shaded. Run it by hand after re-recording a sweep:

    .venv/bin/python docs/hooks/tradeoff_plots.py

The figures are committed; ``mkdocs build`` does not run this file.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "benchmarks" / "results" / "tradeoff"
TARGET = ROOT / "docs" / "assets" / "tradeoff"


def plot(sweep: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sweep["rows"]
    base = next(r for r in rows if r["method"] == "none")
    points = [r for r in rows if r["method"] != "none"]
    fixed = ", ".join(f"{k}={v}" for k, v in sweep.get("fixed", {}).items())
    fig, ax = plt.subplots(figsize=(6.4, 4.6), dpi=110)
    ax.add_patch(plt.Rectangle((0, 0.9 * base["clip_gen"]), 0.7 * base["sscd_mem"], 1.1 * base["clip_gen"] - 0.9 * base["clip_gen"],
                               color="#2e7d32", alpha=0.12, label="target: sscd_mem -30%, clip_gen within 10%"))
    ax.plot([r["sscd_mem"] for r in points], [r["clip_gen"] for r in points], "o-", color="#ef6c00",
            label=sweep["method"] + (f" ({fixed})" if fixed else ""))
    for r in points:
        ax.annotate(f"{r['setting']:g}", (r["sscd_mem"], r["clip_gen"]), textcoords="offset points",
                    xytext=(5, -11), fontsize=8)
    ax.plot([base["sscd_mem"]], [base["clip_gen"]], "k*", markersize=13, label="none")
    ax.set_xlim(left=0)
    ax.set_xlabel("sscd_mem (copy similarity to the source, lower = less copying)")
    ax.set_ylabel("clip_gen (prompt fidelity, higher = better)")
    ax.set_title(f"{sweep['method']} over {sweep['param']} on {sweep['suite']}", fontsize=10)
    ax.legend(fontsize=8, loc="best", framealpha=0.9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    TARGET.mkdir(parents=True, exist_ok=True)
    for path in sorted(SOURCE.glob("*.json")):
        plot(json.loads(path.read_text()), TARGET / (path.stem + ".png"))
        print(TARGET / (path.stem + ".png"))


if __name__ == "__main__":
    main()
