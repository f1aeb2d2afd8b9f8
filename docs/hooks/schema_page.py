"""MkDocs hook: fills generated sections into pages at build time.

A page asks for generated content with an HTML comment on a line of its own:

* ``<!-- generated: result-schema -->``: a table of every property of the result JSON
  Schema (``leaderboards/schema/result-v1.json``): its path, type, whether it is required
  and its description;
* ``<!-- generated: leaderboard leaderboards/NAME.json -->``: the main columns of a
  shipped leaderboard, one row per entry;
* ``<!-- generated: changelog -->``: the repository's ``CHANGELOG.md``.

Files are read as data (``json.loads`` and plain text); nothing in them is executed. Paths
are relative to the folder holding ``mkdocs.yml``, so the build works from any working
directory. A missing file or an unknown marker fails the build with a message naming it.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

SCHEMA = "leaderboards/schema/result-v1.json"
CHANGELOG = "CHANGELOG.md"
MARKER = re.compile(r"^<!-- generated: (?P<what>[a-z-]+)(?: (?P<arg>\S+))? -->$", re.MULTILINE)
LEADERBOARD_COLUMNS = ("sscd_mem", "retrigger_sscd_mem", "copy_rate_mem", "retrigger_copy_rate", "retrieval_mem",
                       "clip_gen", "fid_gen")  # those no entry of a board has are left out

_root = Path(".")


def on_config(config, **kwargs):
    global _root
    _root = Path(config.config_file_path).resolve().parent
    return config


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    def replace(match: re.Match) -> str:
        what, arg = match.group("what"), match.group("arg")
        if what == "result-schema":
            return schema_table(_read_json(SCHEMA))
        if what == "leaderboard" and arg:
            return leaderboard_table(_read_json(arg), arg)
        if what == "changelog":
            return _read_text(CHANGELOG)
        raise ValueError(f"{page.file.src_path}: unknown generated section {match.group(0)!r}")

    return MARKER.sub(replace, markdown)


# -- reading ------------------------------------------------------------------------------
def _read_text(rel: str) -> str:
    path = _root / rel
    if not path.is_file():
        raise FileNotFoundError(f"docs hook: {rel} not found next to mkdocs.yml")
    return path.read_text(encoding="utf-8")


def _read_json(rel: str) -> Any:
    return json.loads(_read_text(rel))


# -- the result schema ----------------------------------------------------------------------
def _cell(text: str) -> str:
    """Plain text for a table cell: one line, HTML characters escaped, pipes escaped."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def type_of(node: dict[str, Any]) -> str:
    """A short reading of a schema node's type and constraints."""
    if "const" in node:
        return f"constant `{json.dumps(node['const'])}`"
    if "enum" in node:
        return "one of " + ", ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    kind = node.get("type", "any")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and isinstance(node.get("items"), dict):
        kind = f"array of {type_of(node['items'])}"
        if "minItems" in node and node.get("minItems") == node.get("maxItems"):
            kind += f" (exactly {node['minItems']})"
    extra = []
    if "pattern" in node:
        extra.append(f"pattern `{node['pattern']}`")
    if "minimum" in node:
        extra.append(f">= {node['minimum']}")
    if "exclusiveMinimum" in node:
        extra.append(f"> {node['exclusiveMinimum']}")
    return kind + (f" ({', '.join(extra)})" if extra else "")


def schema_rows(node: dict[str, Any], prefix: str = "", required: bool = True) -> list[tuple[str, str, str, str]]:
    """(path, type, required, description) for a node's properties, depth first."""
    rows = []
    needed = set(node.get("required", []))
    for name, child in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        rows.append((path, type_of(child), "yes" if name in needed else "no", child.get("description", "")))
        rows.extend(schema_rows(child, path + "."))
        extra = child.get("additionalProperties")
        if isinstance(extra, dict):
            key = {"summary": "<column>", "metrics": "<column>", "per_prompt": "<prompt>"}.get(name, "<key>")
            rows.append((f"{path}.{key}", type_of(extra), "", extra.get("description", f"one entry per {key[1:-1]}")))
            rows.extend(schema_rows(extra, f"{path}.{key}."))
    return rows


def schema_table(schema: dict[str, Any]) -> str:
    lines = [
        f"Schema `{schema.get('$id', SCHEMA)}`: {_cell(schema.get('description', ''))}",
        "",
        "| property | type | required | description |",
        "| --- | --- | --- | --- |",
    ]
    for path, kind, req, desc in schema_rows(schema):
        lines.append(f"| `{path}` | {_cell(kind)} | {req} | {_cell(desc)} |")
    return "\n".join(lines) + "\n"


# -- a leaderboard ---------------------------------------------------------------------------
def leaderboard_table(board: dict[str, Any], rel: str) -> str:
    suite = board.get("suite", {})
    entries = sorted(board.get("entries", []), key=lambda e: (e["method"] != "none", e["method"]))
    base = next((e["result"]["summary"] for e in entries if e["method"] == "none"), None)
    columns = [c for c in LEADERBOARD_COLUMNS if any(c in e["result"]["summary"] for e in entries)]
    head = ["method", *(f"`{c}`" for c in columns), "`sscd_mem` change", "`clip_gen` change",
            "time vs none"]
    lines = [
        f"`{rel}`: suite `{suite.get('name')}` version {suite.get('version')}, "
        f"updated {str(board.get('updated_utc', ''))[:10]}.",
        "",
        "| " + " | ".join(head) + " |",
        "| " + " | ".join("---" for _ in head) + " |",
    ]
    for entry in entries:
        result = entry["result"]
        summary = result["summary"]
        cells = [f"`{entry['method']}`"]
        for col in columns:
            value = summary.get(col)
            cells.append("" if value is None else (f"{value:.1f}" if col == "fid_gen" else f"{value:.3f}"))
        for col in ("sscd_mem", "clip_gen"):
            if base is None or entry["method"] == "none" or not base.get(col):
                cells.append("")
            else:
                cells.append(f"{100 * (summary[col] / base[col] - 1):+.1f}%")
        ratio = result.get("cost", {}).get("vs_none", {}).get("seconds_per_image_ratio")
        cells.append("" if ratio is None else f"{ratio:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
