"""A user's list of non-memorized prompts (``--data general_prompts=FILE``).

Detection needs negatives: prompts the model did not memorize, such as COCO captions or a
Lexica list. Three shapes are read, chosen by content:

* plain text: one prompt a line (blank lines skipped);
* JSONL: one object a line with a ``prompt``, ``caption`` or ``text`` field;
* CSV (``,`` or ``;``): a header row naming a ``prompt``, ``caption`` or ``text`` column.

Duplicates are dropped (first kept), so one prompt never counts twice. The file's sha256
goes into the result.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

from memorybench.errors import DataError

PROMPT_FIELDS = ("prompt", "caption", "text")
MAX_PROMPT_FILE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class PromptList:
    path: Path
    format: str  # "text", "jsonl" or "csv"
    prompts: tuple[str, ...]
    sha256: str


def _field(row: dict, where: str) -> str:
    for name in PROMPT_FIELDS:
        value = row.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
    raise DataError(f"{where}: no non-empty {'/'.join(PROMPT_FIELDS)} field")


def _from_jsonl(text: str, path: Path) -> list[str]:
    from memorybench.realdata.webster import jsonl_objects

    return [_field(row, where) for _, where, row in jsonl_objects(path, text, "a prompt, caption or text field")]


def _from_csv(text: str, path: Path) -> list[str]:
    header = text.splitlines()[0]
    delimiter = ";" if header.count(";") > header.count(",") else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    fields = [f.strip().lower() for f in reader.fieldnames or []]
    if not any(f in PROMPT_FIELDS for f in fields):
        raise DataError(f"'{path}': CSV header {fields} names no {'/'.join(PROMPT_FIELDS)} column")
    out = []
    for n, row in enumerate(reader, 2):
        out.append(_field({k.strip().lower(): v for k, v in row.items() if k}, f"'{path}' line {n}"))
    return out


def _looks_like_csv(first_line: str) -> bool:
    cells = [c.strip().strip('"').lower() for c in first_line.replace(";", ",").split(",")]
    return len(cells) > 1 and any(c in PROMPT_FIELDS for c in cells)


def read_prompt_list(path: str | Path) -> PromptList:
    path = Path(path).expanduser()
    size = path.stat().st_size
    if size > MAX_PROMPT_FILE_BYTES:
        raise DataError(f"'{path}' is {size} bytes: a prompt list may hold at most {MAX_PROMPT_FILE_BYTES}")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"'{path}' is not UTF-8 text (byte {exc.start})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"'{path}' holds no prompts")
    if lines[0].lstrip().startswith("{"):
        fmt, prompts = "jsonl", _from_jsonl(text, path)
    elif _looks_like_csv(lines[0]):
        fmt, prompts = "csv", _from_csv(text, path)
    else:
        fmt, prompts = "text", [line.strip() for line in lines]
    unique = tuple(dict.fromkeys(prompts))
    return PromptList(path, fmt, unique, hashlib.sha256(raw).hexdigest())


__all__ = ["PromptList", "read_prompt_list", "PROMPT_FIELDS"]
