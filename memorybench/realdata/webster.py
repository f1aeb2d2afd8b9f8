"""The Webster-500 memorized prompts, read from either file the papers released.

Two formats, auto-detected from the content (not the file name):

* ``wen-jsonl`` (Wen et al. ICLR'24): one JSON object per line with ``caption`` (the
  prompt), ``index`` (the LAION index of the training image) and ``url``. No labels.
* ``nemo-csv`` (NeMo): a ``;``-separated CSV with the header
  ``;Caption;URL;type;mean_sscd;max_sscd;Index`` (pandas' unnamed row-number column
  first); captions containing ``;`` or ``"`` are double-quoted with ``""`` escapes.
  ``type`` labels each prompt ``VM`` (verbatim memorization) or ``TM`` (template
  memorization).

A UTF-8 byte-order mark, CRLF line ends, blank lines and whitespace around fields are
tolerated; captions are stripped of surrounding whitespace (tokenizers ignore it, and the
two files then agree prompt for prompt). Anything else that does not fit is a
:class:`~memorybench.errors.DataError` naming the file and line.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import dataclass
from collections.abc import Iterator
from pathlib import Path

from memorybench.errors import DataError
from memorybench.core.hashing import sha256_file

WEN_JSONL = "wen-jsonl"
NEMO_CSV = "nemo-csv"
FORMAT_DESCRIPTIONS = {
    WEN_JSONL: "Wen et al.'s JSONL (caption, index, url; no labels)",
    NEMO_CSV: "NeMo's ';'-separated CSV (Caption, URL, type VM/TM, Index)",
}
LABELS = ("VM", "TM")  # NeMo's verbatim / template memorization
NEMO_REQUIRED_COLUMNS = ("Caption", "URL", "type", "Index")
EXPECTED_SHAPES = (
    "expected Wen's JSONL (one {\"caption\", \"index\", \"url\"} object per line) or NeMo's "
    "';'-separated CSV with header ';Caption;URL;type;mean_sscd;max_sscd;Index'"
)


@dataclass(frozen=True)
class WebsterRecord:
    prompt: str
    laion_index: int
    url: str
    label: str | None  # "VM" / "TM" from NeMo's CSV; None from Wen's JSONL
    line: int  # line of the file the record starts on (1-based), for messages


@dataclass(frozen=True)
class WebsterFile:
    path: Path
    format: str  # WEN_JSONL or NEMO_CSV
    records: tuple[WebsterRecord, ...]
    sha256: str  # of the file's bytes

    @property
    def prompts(self) -> list[str]:
        return [r.prompt for r in self.records]

    @property
    def has_labels(self) -> bool:
        return all(r.label is not None for r in self.records)

    def label_counts(self) -> dict[str, int]:
        """Prompts per label, in the order of ``LABELS`` (empty without labels)."""
        if not self.has_labels:
            return {}
        counts = Counter(r.label for r in self.records)
        return {label: counts[label] for label in LABELS if counts[label]}


def _read_text(path: Path) -> str:
    if not path.exists():
        raise DataError(f"Webster prompt file '{path}' does not exist ({EXPECTED_SHAPES})")
    if not path.is_file():
        raise DataError(f"Webster prompt file '{path}' is not a file ({EXPECTED_SHAPES})")
    try:
        return path.read_bytes().decode("utf-8-sig")  # -sig drops a byte-order mark
    except UnicodeDecodeError as exc:
        raise DataError(f"Webster prompt file '{path}' is not UTF-8 text: {exc}") from None


def detect_format(text: str) -> str | None:
    """``wen-jsonl``, ``nemo-csv`` or None, from the first non-blank line."""
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if first.startswith("{"):
        return WEN_JSONL
    header = [cell.strip() for cell in next(csv.reader([first], delimiter=";"), [])]
    if all(col in header for col in NEMO_REQUIRED_COLUMNS):
        return NEMO_CSV
    return None


def _parse_index(value: object, where: str) -> int:
    if isinstance(value, bool):
        raise DataError(f"{where}: LAION index must be an integer, got {value!r}")
    if isinstance(value, int):
        index = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        index = int(value.strip())
    else:
        raise DataError(f"{where}: LAION index must be an integer, got {value!r}")
    if index < 0:
        raise DataError(f"{where}: LAION index must not be negative, got {index}")
    return index


def _parse_caption(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: caption must be a non-empty string, got {value!r}")
    return value.strip()


def jsonl_objects(path: Path, text: str, fields: str) -> Iterator[tuple[int, str, dict]]:
    """(line number, "path:line", object) for each non-blank line; a line that is not a JSON
    object is a ``DataError`` naming the line and the ``fields`` it should hold."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: malformed JSON line ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: expected a JSON object with {fields}; got {type(obj).__name__}")
        yield number, where, obj


def _read_wen_jsonl(path: Path, text: str) -> list[WebsterRecord]:
    records = []
    for number, where, obj in jsonl_objects(path, text, "caption, index, url"):
        missing = [k for k in ("caption", "index") if k not in obj]
        if missing:
            raise DataError(f"{where}: missing key(s) {', '.join(missing)} (each line needs caption, index, url)")
        url = obj.get("url", "")
        if not isinstance(url, str):
            raise DataError(f"{where}: url must be a string, got {url!r}")
        records.append(WebsterRecord(_parse_caption(obj["caption"], where), _parse_index(obj["index"], where),
                                     url.strip(), None, number))
    return records


def _read_nemo_csv(path: Path, text: str) -> list[WebsterRecord]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";", quotechar='"', strict=True)
    header: list[str] | None = None
    records = []
    start = 1  # physical line a record starts on (quoted captions may span lines)
    try:
        for row in reader:
            first_line, start = start, reader.line_num + 1
            where = f"{path}:{first_line}"
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                col = {name: header.index(name) for name in NEMO_REQUIRED_COLUMNS}
                continue
            if len(row) != len(header):
                raise DataError(f"{where}: malformed row: {len(row)} fields, the header has {len(header)} "
                                "(an unquoted ';' or '\"' inside a caption?)")
            label = row[col["type"]].strip()
            if label not in LABELS:
                raise DataError(f"{where}: type must be one of {', '.join(LABELS)}, got {label!r}")
            records.append(WebsterRecord(_parse_caption(row[col["Caption"]], where),
                                         _parse_index(row[col["Index"]], where),
                                         row[col["URL"]].strip(), label, first_line))
    except csv.Error as exc:
        raise DataError(f"{path}:{start}: malformed CSV row ({exc}; an unclosed or stray '\"'?)") from None
    return records


def read_webster(path: str | Path) -> WebsterFile:
    """Read a Webster-500 prompt file in either format (detected from its content)."""
    path = Path(path).expanduser()
    text = _read_text(path)
    fmt = detect_format(text)
    if fmt is None:
        raise DataError(f"'{path}' is in no known Webster format: {EXPECTED_SHAPES}")
    records = _read_wen_jsonl(path, text) if fmt == WEN_JSONL else _read_nemo_csv(path, text)
    if not records:
        raise DataError(f"Webster prompt file '{path}' holds no prompts")
    seen: dict[str, int] = {}
    for r in records:  # a prompt is the key of its generations: two rows with one prompt are ambiguous
        if r.prompt in seen:
            raise DataError(f"{path}:{r.line}: duplicate prompt (first on line {seen[r.prompt]}): {r.prompt[:60]!r}")
        seen[r.prompt] = r.line
    return WebsterFile(path, fmt, tuple(records), sha256_file(path))


__all__ = ["WebsterRecord", "WebsterFile", "read_webster", "detect_format", "WEN_JSONL", "NEMO_CSV", "LABELS",
           "FORMAT_DESCRIPTIONS"]
