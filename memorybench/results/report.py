"""The static leaderboard page: ``memorybench report --leaderboard L --out DIR``.

One self-contained folder that opens from disk, with no server and nothing fetched from
elsewhere: ``index.html`` (inline CSS and a few lines of plain JavaScript that sort the
table), ``tradeoff.png`` (copy similarity against prompt fidelity, with 95% CIs) and
``thumbs/`` (each method's memorized-prompt generations beside the training image).
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any

from memorybench.results.leaderboard import load_leaderboard, thumbnail_path

PLOT_X, PLOT_Y = "clip_gen", "sscd_mem"  # prompt fidelity on general prompts vs copying

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 80rem; padding: 0 1rem; color: #1b1b1b; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2.2rem; }
.meta { color: #555; font-size: .9rem; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; margin-top: 1rem; }
th, td { padding: .3rem .55rem; border-bottom: 1px solid #ddd; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { cursor: pointer; user-select: none; background: #f3f3f3; position: sticky; top: 0; }
thead th:hover { background: #e4e9f2; }
th .dir { color: #2a6; font-weight: normal; } th .dir.lower { color: #a52; }
th .sorted { color: #246; }
td.none { color: #999; }
.cards { display: flex; flex-wrap: wrap; gap: 1.2rem 1.6rem; margin-top: 1rem; }
figure.card { margin: 0; }
figure.card figcaption { font-weight: 600; margin-bottom: .3rem; }
.grid img { image-rendering: pixelated; border: 1px solid #ccc; display: block; }
ol { margin: .2rem 0 0; padding-left: 1.6rem; font-size: .9rem; }
.legend { font-size: .85rem; color: #555; }
"""

# Click a header: sort by that column, best first (by its direction); click again: reverse.
_JS = """
(function () {
  var table = document.getElementById('leaderboard');
  var heads = table.tHead.rows[0].cells;
  function key(row, col) {
    var v = row.cells[col].getAttribute('data-value');
    return v === null || v === '' ? null : parseFloat(v);
  }
  function sortBy(col, ascending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      if (col === 0) {
        var s = a.cells[0].textContent.localeCompare(b.cells[0].textContent);
        return ascending ? s : -s;
      }
      var x = key(a, col), y = key(b, col);
      if (x === null && y === null) return 0;
      if (x === null) return 1;  // missing values last either way
      if (y === null) return -1;
      return ascending ? x - y : y - x;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    for (var i = 0; i < heads.length; i++) {
      heads[i].removeAttribute('aria-sort');
      heads[i].querySelector('.sorted').textContent = '';
    }
    heads[col].setAttribute('aria-sort', ascending ? 'ascending' : 'descending');
    heads[col].querySelector('.sorted').textContent = ascending ? ' \\u25b2' : ' \\u25bc';
  }
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener('click', function () {
      var current = th.getAttribute('aria-sort');
      var ascending;
      if (current) ascending = current !== 'ascending';
      else ascending = th.getAttribute('data-higher-is-better') !== 'true';
      sortBy(col, ascending);
    });
  });
})();
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 0.001:
        return f"{value:.3f}"
    return f"{value:.2e}"


def _labels(entries: list[dict[str, Any]]) -> list[str]:
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["method"]] = counts.get(e["method"], 0) + 1
    return [e["method"] if counts[e["method"]] == 1 else f"{e['method']} ({e['config_sha256'][:8]})" for e in entries]


def _anchor(entry: dict[str, Any]) -> str:
    return _esc(f"m-{entry['method']}-{entry['config_sha256'][:8]}")  # names are checked at publish


def _direction(entries: list[dict[str, Any]], column: str) -> bool | None:
    for e in entries:
        metric = e["result"]["metrics"].get(column)
        if metric is not None:
            return bool(metric["higher_is_better"])
    return None


def _columns(board: dict[str, Any]) -> list[str]:
    names = [c["name"] for c in board.get("columns", []) if isinstance(c, dict) and "name" in c]
    for e in board["entries"]:
        for name in e["result"]["summary"]:
            if name not in names:
                names.append(name)
    return names


def _header(name: str, higher: bool | None, title: str) -> str:
    if higher is None:
        arrow, cls, words = "", "", ""
    else:
        arrow, cls = ("\u2191", "higher") if higher else ("\u2193", "lower")
        words = f"{cls} is better"
    hib = "" if higher is None else f' data-higher-is-better="{str(higher).lower()}"'
    return (f'<th scope="col" data-column="{_esc(name)}"{hib} title="{_esc(title or words)}">{_esc(name)} '
            f'<span class="dir {cls}" aria-label="{words}">{arrow}</span><span class="sorted"></span></th>')


def _cell(value: float | None, metric: dict[str, Any] | None = None, seconds: bool = False) -> str:
    if value is None:
        return '<td class="none" data-value="">-</td>'
    shown = f"{value:.2f}" if seconds else _fmt(value)
    title = ""
    if metric is not None:
        lo, hi = metric["ci95"]
        ci = f"95% CI [{_fmt(lo)}, {_fmt(hi)}], " if lo is not None and hi is not None else ""
        title = f' title="{_esc(ci)}n = {metric["n"]}"'
    return f'<td data-value="{value!r}"{title}>{shown}</td>'


def _table(board: dict[str, Any], entries: list[dict[str, Any]], labels: list[str]) -> str:
    cols = _columns(board)
    heads = ['<th scope="col" data-column="method" title="method (config sha256 when a method has several)">'
             'method <span class="dir"></span><span class="sorted"></span></th>']
    heads += [_header(c, _direction(entries, c), "") for c in cols]
    heads.append(_header("cost_vs_none", False, "seconds per image with the method / with none, "
                                               "same batch, same process (lower is better)"))
    heads.append(_header("prepare_s", False, "one-off preparation seconds (lower is better)"))
    rows = []
    for entry, label in zip(entries, labels):
        result = entry["result"]
        cells = [f'<th scope="row" id="{_anchor(entry)}-row" data-value="{_esc(label)}">'
                 f'<a href="#{_anchor(entry)}">{_esc(label)}</a></th>']
        for c in cols:
            cells.append(_cell(result["summary"].get(c), result["metrics"].get(c)))
        ratio = (result["cost"].get("vs_none") or {}).get("seconds_per_image_ratio")
        cells.append(_cell(ratio))
        cells.append(_cell(result["cost"].get("preparation_seconds"), seconds=True))
        rows.append(f'<tr data-method="{_esc(entry["method"])}" data-config="{_esc(entry["config_sha256"])}">'
                    + "".join(cells) + "</tr>")
    return ('<div class="scroll"><table id="leaderboard"><thead><tr>' + "".join(heads) + "</tr></thead><tbody>\n"
            + "\n".join(rows) + "\n</tbody></table></div>")


def _plot(entries: list[dict[str, Any]], labels: list[str], out: Path) -> str:
    """The trade-off scatter with CIs as error bars; returns the HTML that shows it."""
    points = [(lab, e["result"]["metrics"].get(PLOT_X), e["result"]["metrics"].get(PLOT_Y))
              for e, lab in zip(entries, labels)]
    points = [(lab, x, y) for lab, x, y in points if x is not None and y is not None]
    if not points:
        return (f'<p class="legend">No trade-off plot: no entry has both <code>{PLOT_X}</code> and '
                f'<code>{PLOT_Y}</code>.</p>')
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def err(m: dict[str, Any]) -> list[float]:
        lo, hi = m["ci95"]
        if lo is None or hi is None:
            return [0.0, 0.0]
        return [max(m["value"] - lo, 0.0), max(hi - m["value"], 0.0)]

    fig, ax = plt.subplots(figsize=(7.5, 5.2), dpi=110)
    for lab, x, y in points:
        is_none = lab == "none"
        ax.errorbar(x["value"], y["value"], xerr=[[err(x)[0]], [err(x)[1]]], yerr=[[err(y)[0]], [err(y)[1]]],
                    fmt="s" if is_none else "o", color="#444" if is_none else None, capsize=3, markersize=6,
                    label=lab)
        ax.annotate(lab, (x["value"], y["value"]), textcoords="offset points", xytext=(6, 5), fontsize=8)
    x_dir = "higher" if points[0][1]["higher_is_better"] else "lower"
    y_dir = "higher" if points[0][2]["higher_is_better"] else "lower"
    ax.set_xlabel(f"{PLOT_X} ({x_dir} is better)")
    ax.set_ylabel(f"{PLOT_Y} ({y_dir} is better)")
    ax.set_title("Copying vs prompt fidelity (bars: 95% CI over prompts)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "tradeoff.png")
    plt.close(fig)
    return (f'<img src="tradeoff.png" width="825" height="572" alt="scatter of {PLOT_Y} against {PLOT_X} '
            'per method with 95% confidence intervals">')


HIDDEN_X, HIDDEN_Y = "sscd_mem", "retrigger_sscd_mem"  # original prompts vs the re-trigger attack


def _hidden_plot(entries: list[dict[str, Any]], labels: list[str], out: Path) -> str:
    """"Hidden vs removed": each method's copying from its prompts against copying after the
    re-trigger attack, with the diagonal (the attack found nothing the prompt did not);
    empty when no entry ran the attack."""
    points = [(lab, e["result"]["metrics"].get(HIDDEN_X), e["result"]["metrics"].get(HIDDEN_Y))
              for e, lab in zip(entries, labels)]
    points = [(lab, x, y) for lab, x, y in points if x is not None and y is not None]
    if not points:
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def err(m: dict[str, Any]) -> list[list[float]]:
        lo, hi = m["ci95"]
        if lo is None or hi is None:
            return [[0.0], [0.0]]
        return [[max(m["value"] - lo, 0.0)], [max(hi - m["value"], 0.0)]]

    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=110)
    vals = [v for _, x, y in points for v in (x["value"], y["value"])]
    lo, hi = min(vals + [0.0]) - 0.05, max(vals + [1.0]) + 0.02
    ax.plot([lo, hi], [lo, hi], color="#999", lw=1, ls="--", label="attack finds nothing more")
    for lab, x, y in points:
        ax.errorbar(x["value"], y["value"], xerr=err(x), yerr=err(y), fmt="s" if lab == "none" else "o",
                    color="#444" if lab == "none" else None, capsize=3, markersize=6)
        ax.annotate(lab, (x["value"], y["value"]), textcoords="offset points", xytext=(6, 5), fontsize=8)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(f"{HIDDEN_X}: from the memorized prompts (lower is better)")
    ax.set_ylabel(f"{HIDDEN_Y}: after the re-trigger attack (lower is better)")
    ax.set_title("Hidden or removed? (bars: 95% CI over prompts)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "hidden.png")
    plt.close(fig)
    return ('<h2>Hidden or removed: copying from the prompts vs after the re-trigger attack</h2>'
            '<p class="legend">A method far above the diagonal hides memorized images from their prompts; '
            'the attack (a bounded search in the text-embedding space, see the suite) brings them back. '
            'Near the diagonal and low: removed.</p>'
            f'<img src="hidden.png" width="704" height="616" alt="scatter of {HIDDEN_Y} against {HIDDEN_X} '
            'per method with 95% confidence intervals">')


PER_PROMPT_COLUMN = "sscd_mem"


def _per_prompt_table(entries: list[dict[str, Any]], labels: list[str], column: str = PER_PROMPT_COLUMN) -> str:
    """Prompts x entries: each prompt's value of ``column``, shaded, so the prompts a method
    leaves copied stand out. Entries published without per-prompt values are named below it."""
    shown = [(e, lab, e["result"]["metrics"].get(column, {}).get("per_prompt")) for e, lab in zip(entries, labels)]
    with_values = [(e, lab, per) for e, lab, per in shown if per]
    if not with_values:
        return ""
    prompts = list(dict.fromkeys(p for _, _, per in with_values for p in per))
    values = [v for _, _, per in with_values for v in per.values()]
    lo, hi = min(values), max(values)
    heads = "".join(f'<th scope="col"><a href="#{_anchor(e)}-row">{_esc(lab)}</a></th>' for e, lab, _ in with_values)
    rows = []
    for prompt in prompts:
        cells = []
        for _, _, per in with_values:
            v = per.get(prompt)
            if v is None:
                cells.append('<td class="none">-</td>')
                continue
            # white (lowest value on the page) to orange (highest): where copies remain
            a = 0.0 if hi == lo else (v - lo) / (hi - lo)
            cells.append(f'<td data-value="{v!r}" style="background: rgba(230, 120, 30, {0.75 * a:.2f})">{_fmt(v)}</td>')
        rows.append(f'<tr><th scope="row">{_esc(prompt)}</th>{"".join(cells)}</tr>')
    missing = [lab for _, lab, per in shown if not per]
    note = (f'<p class="legend">Published without per-prompt values (re-run to add them): {_esc(", ".join(missing))}.</p>'
            if missing else "")
    return (f'<h2>Per memorized prompt: {_esc(column)}</h2><p class="legend">Each prompt\'s value '
            f'(darker = higher; {_esc(column)} {"higher" if _direction(entries, column) else "lower"} is better).</p>'
            f'<div class="scroll"><table id="{"per-prompt" if column == PER_PROMPT_COLUMN else "per-prompt-" + _esc(column)}"><thead><tr><th scope="col">prompt</th>{heads}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>{note}')


def _layout(thumbs: dict[str, Any]) -> tuple[str, ...]:
    return (thumbs["prompt_set"], *thumbs["prompts"], "|", *map(str, thumbs["seeds"]), str(thumbs["source_column"]))


def _legend(thumbs: dict[str, Any]) -> str:
    left = "the training image, then " if thumbs["source_column"] else ""
    seeds = ", ".join(str(s) for s in thumbs["seeds"])
    prompts = "".join(f"<li>{_esc(p)}</li>" for p in thumbs["prompts"])
    return (f'<div class="legend">Columns: {left}seeds {_esc(seeds)}. Rows ({_esc(thumbs["prompt_set"])} '
            f"prompts):</div><ol>{prompts}</ol>")


def _grids(leaderboard_path: Path, entries: list[dict[str, Any]], labels: list[str], out: Path) -> str:
    """One card per entry; the rows' prompts are listed once when every grid shares them."""
    shown = [(e, lab, e["result"].get("thumbnails"), thumbnail_path(leaderboard_path, e["result"]))
             for e, lab in zip(entries, labels)]
    layouts = {_layout(t) for _, _, t, src in shown if t and src is not None and src.is_file()}
    common = next((t for _, _, t, src in shown if t and src is not None and src.is_file()), None)
    cards = []
    for entry, label, thumbs, source in shown:
        title = f'<figcaption><a href="#{_anchor(entry)}-row">{_esc(label)}</a></figcaption>'
        if not thumbs or source is None or not source.is_file():
            cards.append(f'<figure class="card" id="{_anchor(entry)}">{title}'
                         '<p class="legend">No generations published.</p></figure>')
            continue
        (out / "thumbs").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, out / "thumbs" / source.name)
        px = int(thumbs["cell_px"])
        scale = 2 if px <= 64 else 1  # tiny-world images are 64 px: show them larger, pixelated
        n_cols = len(thumbs["seeds"]) + (1 if thumbs["source_column"] else 0)
        width = (px * n_cols + (4 if thumbs["source_column"] else 0)) * scale
        height = px * len(thumbs["prompts"]) * scale
        own = _legend(thumbs) if len(layouts) > 1 else ""
        cards.append(f'<figure class="card grid" id="{_anchor(entry)}">{title}<img src="thumbs/{source.name}" '
                     f'width="{width}" height="{height}" alt="{_esc(label)}: generations for the first '
                     f'memorized prompts">{own}</figure>')
    intro = _legend(common) if common is not None and len(layouts) == 1 else ""
    return intro + '<div class="cards">' + "\n".join(cards) + "</div>"


def text_table(leaderboard_path: str | Path, max_columns: int = 8) -> list[str]:
    """The leaderboard as fixed-width terminal lines: one row per entry, the first summary
    columns (with their direction), then the cost ratio against none."""
    board = load_leaderboard(Path(leaderboard_path))
    entries = sorted(board["entries"], key=lambda e: (e["method"] != "none", e["method"], e["config_sha256"]))
    labels = _labels(entries)
    cols = _columns(board)[:max_columns]
    heads = ["method"] + [f"{c}{'' if (h := _direction(entries, c)) is None else ('↑' if h else '↓')}" for c in cols]
    heads.append("cost_vs_none")
    rows = []
    for entry, label in zip(entries, labels):
        result = entry["result"]
        cells = [label] + [("-" if result["summary"].get(c) is None else _fmt(result["summary"][c])) for c in cols]
        ratio = (result["cost"].get("vs_none") or {}).get("seconds_per_image_ratio")
        cells.append("-" if ratio is None else f"{ratio:.2f}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [heads] + rows) for i in range(len(heads))]
    fmt = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return [fmt(heads), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows]


def write_report(leaderboard_path: str | Path, out_dir: str | Path) -> Path:
    """Write ``index.html``, ``tradeoff.png`` and ``thumbs/`` into ``out_dir``; returns the page."""
    leaderboard_path, out = Path(leaderboard_path), Path(out_dir)
    board = load_leaderboard(leaderboard_path)
    out.mkdir(parents=True, exist_ok=True)
    entries = sorted(board["entries"], key=lambda e: (e["method"] != "none", e["method"], e["config_sha256"]))
    labels = _labels(entries)
    suite = board["suite"]
    title = f"memorybench leaderboard: {suite['name']} v{suite['version']}"
    versions = sorted({e["result"]["provenance"]["memorybench_version"] for e in entries})
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>{_esc(title)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{_esc(title)}</h1>
<p class="meta">Suite sha256 <code>{_esc(suite['sha256'])}</code> &middot; {len(entries)} entries &middot;
updated {_esc(board.get('updated_utc', ''))} &middot; memorybench {_esc(', '.join(versions))}</p>
<p class="legend">Click a column header to sort (first click: best first). &uarr; higher is better,
&darr; lower is better. Hover a value for its 95% CI and n. <code>cost_vs_none</code>: seconds per image
with the method divided by seconds per image with no mitigation, timed on the same batch in the same run.</p>
{_table(board, entries, labels)}
<h2>Trade-off: copying vs prompt fidelity</h2>
{_plot(entries, labels, out)}
{_hidden_plot(entries, labels, out)}
<h2>Memorized prompts: generations beside the training image</h2>
{_grids(leaderboard_path, entries, labels, out)}
{_per_prompt_table(entries, labels)}
{_per_prompt_table(entries, labels, HIDDEN_Y)}
<script>{_JS}</script>
</body>
</html>
"""
    from memorybench.core.io import atomic_write_text

    index = out / "index.html"
    atomic_write_text(index, page)
    return index
