"""Leaderboards: publish validated results into ``leaderboards/<suite>.json``.

``publish`` takes result files, rejects any that could not be compared with the others
(another suite version or hash, a missing provenance field, a non-finite number, a summary
that disagrees with its metrics, a name that could escape a folder) with a one-line reason,
and merges the rest: one entry per (method, config sha256); a newer run of the same config
replaces the older one, which moves to the entry's ``history``. Nothing is written unless
every file passes, and the leaderboard is written atomically, under an advisory lock held
from reading the board to writing it back, so parallel publishers lose no entry.

Publish also checks what a result says about itself: its ``config_sha256`` is the hash of
its ``config``, ``created_utc`` is a real time (not in the future, not before 2000), the
model id is not a local path, each confidence interval contains its value, no string is
longer than ``MAX_STRING_CHARS`` and no file larger than ``MAX_RESULT_BYTES``. A result that
is consistent but forged passes all of these: only a rerun (``memorybench compare``) catches it.

Each result's thumbnail grid (see ``memorybench.thumbnails``) is copied beside the
leaderboard as ``<leaderboard stem>/thumbs/<sha256>.png``: content-addressed, so the
leaderboard JSON holds no paths at all.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memorybench.core.io import atomic_write_bytes, atomic_write_text, file_lock, read_json_strict
from memorybench.core.config import sha256_json
from memorybench.errors import ConfigError, UnknownNameError, ValidationError
from memorybench.suites.spec import Suite, load_suite

LEADERBOARD_VERSION = 1
# Names that become (part of) file names or page anchors: no separators, no "..", no control chars.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# Size limits (documented on the reliability page): a result file and any one string in it.
MAX_RESULT_BYTES = 16 * 1024 * 1024
MAX_STRING_CHARS = 64 * 1024
EARLIEST_CREATED = _dt.datetime(2000, 1, 1, tzinfo=_dt.timezone.utc)
FUTURE_TOLERANCE = _dt.timedelta(minutes=10)  # clocks of the machines that ran and publish differ
PROVENANCE_FIELDS = ("memorybench_version", "memorybench_commit", "packages", "python", "platform",
                     "hardware", "seeds", "wall_seconds", "command", "created_utc")


class Rejected(ValidationError):
    """A result that cannot go on the leaderboard; ``reason`` says why in one line."""

    def __init__(self, source: str, reason: str):
        self.source, self.reason = source, reason
        super().__init__(f"rejected {source}: {reason}")




# -- checks ---------------------------------------------------------------------------------
def check_safe_name(value: Any, what: str) -> str:
    """A name that may become part of a file name: reject anything that could leave a folder."""
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{what} must be a non-empty string")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValidationError(f"{what} {value!r} contains control characters")
    if "/" in value or "\\" in value:
        raise ValidationError(f"{what} {value!r} contains a path separator")
    if ".." in value:
        raise ValidationError(f"{what} {value!r} contains '..'")
    if not _SAFE_NAME.match(value):
        raise ValidationError(f"{what} {value!r} must be 1-100 letters, digits, '.', '_' or '-', "
                              "starting with a letter or digit")
    return value


def _section(result: dict[str, Any], key: str) -> dict[str, Any]:
    value = result.get(key)
    if not isinstance(value, dict):
        raise ValidationError(f"result has no '{key}' object")
    return value


def check_string_sizes(obj: Any, where: str = "result", limit: int = MAX_STRING_CHARS) -> None:
    """No string (value or key) longer than ``limit`` characters; the error names the field."""
    stack = [(obj, where)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if len(value) > limit:
                raise ValidationError(f"{path} is a string of {len(value)} characters, more than the "
                                      f"{limit} a result field may hold")
        elif isinstance(value, dict):
            for k, v in value.items():
                if len(k) > limit:
                    raise ValidationError(f"{path} has a key of {len(k)} characters, more than the {limit} allowed")
                stack.append((v, f"{path}.{k}"))
        elif isinstance(value, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(value))


def parse_created(text: Any, where: str = "provenance.created_utc",
                  now: _dt.datetime | None = None) -> _dt.datetime:
    """An ISO 8601 time with a UTC offset, not before 2000 and not (beyond clock skew) in the future."""
    if not isinstance(text, str):
        raise ValidationError(f"{where} must be an ISO 8601 string, got {type(text).__name__}")
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{where} {text[:40]!r} is not an ISO 8601 time") from None
    if when.tzinfo is None:
        raise ValidationError(f"{where} {text!r} has no UTC offset (e.g. +00:00)")
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if when > now + FUTURE_TOLERANCE:
        raise ValidationError(f"{where} {text!r} is in the future (now {now.isoformat(timespec='seconds')})")
    if when < EARLIEST_CREATED:
        raise ValidationError(f"{where} {text!r} is before 2000: not a time a result was made")
    return when


_DRIVE = re.compile(r"^[A-Za-z]:")


def local_path_reason(model_id: str) -> str | None:
    """Why ``model_id`` looks like a local path (None when it is a name such as ``org/model``)."""
    if model_id.startswith(("/", "~", ".")) or _DRIVE.match(model_id):
        return "starts like a local path"
    if "\\" in model_id:
        return "contains a backslash"
    if "://" in model_id or model_id.startswith("file:"):
        return "is a URL"
    parts = model_id.split("/")
    if len(parts) > 2:
        return "has more than one '/' (a model name is NAME or ORG/NAME)"
    if any(part in ("", ".", "..") for part in parts):
        return "has an empty, '.' or '..' part"
    return None


def check_self_consistency(result: dict[str, Any]) -> None:
    """What a schema-valid result says about itself must hold (see the module docstring)."""
    method = result["method"]
    actual = sha256_json(method["config"])
    if actual != method["config_sha256"]:
        raise ValidationError(f"method.config_sha256 {method['config_sha256'][:12]} is not the hash of "
                              f"method.config ({actual[:12]}): the config was changed after the run")
    parse_created(result["provenance"]["created_utc"])
    reason = local_path_reason(result["model"]["id"])
    if reason:
        raise ValidationError(f"model.id {result['model']['id']!r} {reason}: results name models, never local paths")
    for name, metric in result["metrics"].items():
        low, high = metric["ci95"]
        if (low is None) != (high is None):
            raise ValidationError(f"metrics.{name}.ci95 {metric['ci95']}: both bounds or neither must be null")
        if low is None:
            continue
        value, slack = metric["value"], 1e-9 * max(1.0, abs(metric["value"]))
        if low > high:
            raise ValidationError(f"metrics.{name}.ci95 [{low}, {high}]: the low bound is above the high bound")
        if not low - slack <= value <= high + slack:
            raise ValidationError(f"metrics.{name}.ci95 [{low}, {high}] does not contain its value {value}")


def check_result(result: Any, suite: Suite) -> None:
    """Raise ``ValidationError`` with the reason this result cannot join ``suite``'s leaderboard."""
    from memorybench.results.record import validate_result

    if not isinstance(result, dict):
        raise ValidationError("result is not a JSON object")
    check_string_sizes(result)
    method, suite_info = _section(result, "method"), _section(result, "suite")
    check_safe_name(method.get("name"), "method name")
    check_safe_name(suite_info.get("name"), "suite name")
    provenance = _section(result, "provenance")
    missing = [k for k in PROVENANCE_FIELDS if k not in provenance]
    if missing:
        raise ValidationError(f"missing provenance field(s): {', '.join(missing)}")
    validate_result(result)  # schema, finite numbers, summary == metrics
    check_self_consistency(result)
    if suite_info["name"] != suite.name:
        raise ValidationError(f"result is for suite '{suite_info['name']}', this leaderboard is for '{suite.name}'")
    if suite_info.get("smoke"):
        flags = " ".join(f"--{k} {v}" for k, v in suite_info["smoke"].items()) if isinstance(suite_info["smoke"], dict) else ""
        raise ValidationError(f"result is a smoke run ({flags.strip() or 'shrunk suite'}): smoke runs cannot be "
                              "published; rerun without --limit-prompts/--seeds/--steps/--resolution")
    if suite_info["version"] != suite.version or suite_info["sha256"] != suite.sha256():
        raise ValidationError(
            f"result is for suite {suite.name} v{suite_info['version']} sha256 {suite_info['sha256'][:12]}, "
            f"the current suite is v{suite.version} sha256 {suite.sha256()[:12]}: only results of the same suite "
            "version and hash are comparable (rerun on the current suite, without --suite-option)")
    if list(result["summary"]) != list(suite.summary):
        raise ValidationError(f"summary columns {list(result['summary'])} are not the suite's {list(suite.summary)}")


def read_result_for(path: str | Path, suite: Suite) -> dict[str, Any]:
    """Read a result file strictly and check it against ``suite``; ``Rejected`` names the file."""
    try:
        result = read_json_strict(path, "result file", max_bytes=MAX_RESULT_BYTES)
        check_result(result, suite)
    except ValidationError as exc:
        raise Rejected(str(path), str(exc)) from None
    return result


def _thumbnail_bytes(result: dict[str, Any], result_path: Path) -> bytes | None:
    thumbs = result.get("thumbnails")
    if not thumbs:
        return None
    name = check_safe_name(thumbs["file"], "thumbnail file name")
    grid = result_path.parent / name
    try:
        data = grid.read_bytes()
    except OSError:
        raise ValidationError(f"thumbnail grid '{name}' named by the result is not beside it in {result_path.parent}") from None
    if hashlib.sha256(data).hexdigest() != thumbs["sha256"]:
        raise ValidationError(f"thumbnail grid '{name}' does not match the sha256 in the result (changed after the run)")
    return data


# -- the leaderboard file -------------------------------------------------------------------
def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def thumbs_dir(leaderboard_path: str | Path) -> Path:
    path = Path(leaderboard_path)
    return path.parent / path.stem / "thumbs"


def thumbnail_path(leaderboard_path: str | Path, result: dict[str, Any]) -> Path | None:
    """Where a result's grid lives beside the leaderboard (None when it has none)."""
    sha = (result.get("thumbnails") or {}).get("sha256")
    if not isinstance(sha, str) or not _HEX64.match(sha):
        return None
    return thumbs_dir(leaderboard_path) / f"{sha}.png"


def suite_record(suite: Suite) -> dict[str, Any]:
    return {"name": suite.name, "version": suite.version, "sha256": suite.sha256()}


def empty_leaderboard(suite: Suite) -> dict[str, Any]:
    return {"leaderboard_version": LEADERBOARD_VERSION, "suite": suite_record(suite), "columns": [],
            "updated_utc": _now(), "entries": []}


def _check_record(record: Any, where: str) -> None:
    """One published run (an entry's current one, or one of its history): a valid result whose
    hash is the one recorded."""
    from memorybench.results.record import validate_result

    if not isinstance(record, dict):
        raise ValidationError(f"{where} is not an object")
    result = record.get("result")
    if not isinstance(result, dict):
        raise ValidationError(f"{where}.result is not an object")
    try:
        validate_result(result)
    except ValidationError as exc:
        raise ValidationError(f"{where}.result: {exc}") from None
    if not isinstance(record.get("published_utc"), str):
        raise ValidationError(f"{where}.published_utc is not a string")
    if record.get("result_sha256") != sha256_json(result):
        raise ValidationError(f"{where}.result_sha256 is not the hash of its result (changed by hand?)")


def check_leaderboard(board: Any) -> None:
    """Every field a leaderboard command reads has the type it expects; the error names the field."""
    if not isinstance(board, dict):
        raise ValidationError("the file is not a JSON object")
    if board.get("leaderboard_version") != LEADERBOARD_VERSION:
        raise ValidationError(f"leaderboard_version is {board.get('leaderboard_version')!r}, not {LEADERBOARD_VERSION}")
    suite = board.get("suite")
    if not isinstance(suite, dict) or not isinstance(suite.get("name"), str) \
            or not isinstance(suite.get("version"), int) or not isinstance(suite.get("sha256"), str):
        raise ValidationError("suite must be an object with name (string), version (integer) and sha256 (string)")
    for name in ("columns", "updated_utc"):
        if name not in board:
            raise ValidationError(f"{name} is missing")
    if not isinstance(board["columns"], list) or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) for c in board["columns"]):
        raise ValidationError("columns must be a list of objects with a name")
    if not isinstance(board["updated_utc"], str):
        raise ValidationError("updated_utc is not a string")
    entries = board.get("entries")
    if not isinstance(entries, list):
        raise ValidationError("entries is not a list")
    seen = set()
    for i, entry in enumerate(entries):
        where = f"entries[{i}]"
        if not isinstance(entry, dict):
            raise ValidationError(f"{where} is not an object")
        try:
            check_safe_name(entry.get("method"), f"{where}.method")
        except ValidationError as exc:
            raise ValidationError(str(exc)) from None
        if not isinstance(entry.get("config_sha256"), str) or not _HEX64.match(entry["config_sha256"]):
            raise ValidationError(f"{where}.config_sha256 is not a sha256 hex string")
        _check_record(entry, where)
        method = entry["result"]["method"]
        if (method["name"], method["config_sha256"]) != (entry["method"], entry["config_sha256"]):
            raise ValidationError(f"{where}: method and config_sha256 are not those of its result")
        if (entry["method"], entry["config_sha256"]) in seen:
            raise ValidationError(f"{where}: a second entry for {entry['method']} config {entry['config_sha256'][:8]}")
        seen.add((entry["method"], entry["config_sha256"]))
        history = entry.get("history")
        if not isinstance(history, list):
            raise ValidationError(f"{where}.history is not a list")
        for j, old in enumerate(history):
            _check_record(old, f"{where}.history[{j}]")


def load_leaderboard(path: str | Path, suite: Suite | None = None) -> dict[str, Any]:
    """Read a leaderboard file strictly and check every field a command reads; with ``suite``,
    check that it was built for that exact suite."""
    board = read_json_strict(path, "leaderboard")
    try:
        check_leaderboard(board)
    except ValidationError as exc:
        raise ValidationError(f"leaderboard '{path}' is not a valid memorybench leaderboard "
                              f"v{LEADERBOARD_VERSION} file: {exc}") from None
    if suite is not None and board["suite"] != suite_record(suite):
        old = board["suite"]
        raise ValidationError(
            f"leaderboard '{path}' holds suite {old.get('name')} v{old.get('version')} "
            f"sha256 {str(old.get('sha256'))[:12]}, but the current suite is {suite.name} v{suite.version} "
            f"sha256 {suite.sha256()[:12]}: publish into a new leaderboard file")
    return board


def leaderboard_suite(path: str | Path, suite_name: str | None = None) -> Suite:
    """The suite of a leaderboard: ``suite_name``, else the one the file records, else its stem."""
    if suite_name:
        return load_suite(suite_name)
    path = Path(path)
    if path.is_file():
        board = read_json_strict(path, "leaderboard")
        name = board.get("suite", {}).get("name") if isinstance(board, dict) and isinstance(board.get("suite"), dict) else None
        if isinstance(name, str):
            return load_suite(name)
    try:
        return load_suite(path.stem)
    except UnknownNameError:
        raise ConfigError(f"leaderboard '{path}' is new and '{path.stem}' is not a suite name: "
                          "pass --suite NAME (or name the file SUITE.json)") from None


def columns(suite: Suite, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The suite's summary columns with each one's direction (from the published metrics)."""
    out = []
    for name in suite.summary:
        higher = next((e["result"]["metrics"][name]["higher_is_better"] for e in entries
                       if name in e["result"]["metrics"]), None)
        out.append({"name": name, "higher_is_better": higher})
    return out


def _created(result: dict[str, Any]) -> str:
    return str(result["provenance"].get("created_utc", ""))


@dataclass
class PublishReport:
    leaderboard: Path
    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (result file, what happened)
    notes: list[str] = field(default_factory=list)  # for the publisher, not about one result

    def lines(self) -> list[str]:
        return [f"{source}: {what}" for source, what in self.outcomes]


def merge(board: dict[str, Any], result: dict[str, Any]) -> str:
    """Merge one checked result into ``board``; returns what happened, in words."""
    key = (result["method"]["name"], result["method"]["config_sha256"])
    digest = sha256_json(result)
    record = {"result": result, "result_sha256": digest, "published_utc": _now()}
    label = f"{key[0]} (config {key[1][:8]})"
    entry = next((e for e in board["entries"] if (e["method"], e["config_sha256"]) == key), None)
    if entry is None:
        board["entries"].append({"method": key[0], "config_sha256": key[1], **record, "history": []})
        return f"{label}: new entry"
    if digest == entry["result_sha256"] or any(h["result_sha256"] == digest for h in entry["history"]):
        return f"{label}: already published, unchanged"
    if _created(result) >= _created(entry["result"]):
        old = {k: entry[k] for k in ("result", "result_sha256", "published_utc")}
        entry.update(record)
        entry["history"].insert(0, old)
        return f"{label}: replaced the run of {_created(old['result'])} (kept in history)"
    entry["history"].append(record)
    entry["history"].sort(key=lambda h: _created(h["result"]), reverse=True)
    return f"{label}: older than the published run of {_created(entry['result'])}, kept in history only"


def _weights(result: dict[str, Any]) -> str | None:
    return result.get("model", {}).get("weights_sha256")


def suite_weights(suite: Suite) -> str | None:
    """The weights a suite's model must have, when this machine can tell: the installed tiny
    world's for suites on ``tinyworld``; None for models given by path (``--model``)."""
    if suite.model != "tinyworld":
        return None
    from memorybench.model.pipeline import folder_weights_sha256
    from memorybench.tinyworld import world_path

    folder = world_path() / "pipeline"
    return folder_weights_sha256(folder) if folder.is_dir() else None


def model_weights_pin(value: str) -> tuple[str, str]:
    """``publish --model-weights``: a sha256 as results record it, or a local model folder
    hashed the way ``run`` hashes it. Returns the sha256 and how it was given (never the path:
    the answer may be printed beside results)."""
    if re.fullmatch(r"[0-9a-fA-F]{64}", value):
        return value.lower(), "this leaderboard is pinned (--model-weights) to weights"
    folder = Path(value).expanduser()
    if not folder.is_dir():
        raise ValidationError(f"--model-weights: expected a 64-digit sha256 or a local model folder, got '{value}'")
    from memorybench.model.pipeline import folder_weights_sha256

    return (folder_weights_sha256(folder),
            f"this leaderboard is pinned (--model-weights, folder '{folder.name}') to weights")


def _other_weights(board: dict[str, Any], checked: list[tuple[str, dict[str, Any], bytes | None]],
                   suite: Suite | None = None, pinned: tuple[str, str] | None = None) -> list[Rejected]:
    """One board ranks methods on one model: a suite names its model (``tinyworld``), but the
    weights behind that name change when a new world ships, and numbers from two worlds are
    not comparable. For a suite on the tiny world, results must have the installed world's
    weights (so a first result on other weights cannot claim a new board); for a model given by
    path, those the publisher pins with ``--model-weights``; on any board they must have those
    of its entries (of the first result, on a new board)."""
    if not checked:
        return []
    references = []
    expected = suite_weights(suite) if suite is not None else None
    if expected is not None:
        references.append((expected, f"suite {suite.name} runs on the installed tiny world"))
    if pinned is not None:
        references.append(pinned)
    if board["entries"]:
        references.append((_weights(board["entries"][0]["result"]), "this leaderboard's entries"))
    else:
        references.append((_weights(checked[0][1]), "the first result published with it"))
    for reference, where in references:
        rejected = [Rejected(source, f"result was made with model weights sha256 {str(_weights(result))[:12]}, "
                                     f"{where} with {str(reference)[:12]}: results on other weights are not "
                                     "comparable (re-publish every method on the new weights into a new "
                                     "leaderboard file)")
                    for source, result, _ in checked if _weights(result) != reference]
        if rejected:
            return rejected
    return []


def publish(result_paths: list[str | Path], leaderboard_path: str | Path,
            suite_name: str | None = None, model_weights: str | None = None) -> PublishReport:
    """Check every result, then merge them all into the leaderboard (or nothing, on any rejection).

    ``model_weights`` (a sha256 or a local model folder) pins the weights every result must
    have: without it a new board on a model given by path takes those of its first result.

    The whole read-check-merge-write runs under the leaderboard's lock: a publisher that
    starts while another one writes waits, then reads the board with the other's entries."""
    leaderboard_path = Path(leaderboard_path)
    pinned = model_weights_pin(model_weights) if model_weights is not None else None
    with file_lock(leaderboard_path):
        return _publish_locked(result_paths, leaderboard_path, suite_name, pinned)


def _publish_locked(result_paths: list[str | Path], leaderboard_path: Path,
                    suite_name: str | None, pinned: tuple[str, str] | None) -> PublishReport:
    suite = leaderboard_suite(leaderboard_path, suite_name)
    board = load_leaderboard(leaderboard_path, suite) if leaderboard_path.exists() else empty_leaderboard(suite)
    checked, rejections = [], []
    for path in result_paths:
        try:
            result = read_result_for(path, suite)
            try:
                grid = _thumbnail_bytes(result, Path(path))
            except ValidationError as exc:
                raise Rejected(str(path), str(exc)) from None
            checked.append((str(path), result, grid))
        except Rejected as exc:
            rejections.append(exc)
    if not rejections:
        rejections = _other_weights(board, checked, suite, pinned)
    if rejections:
        if len(rejections) == 1:
            raise rejections[0]
        raise ValidationError("; ".join(str(r) for r in rejections) + "; nothing published")
    report = PublishReport(leaderboard_path)
    if checked and not board["entries"] and pinned is None and suite.model != "tinyworld":
        report.notes.append(
            f"note: this new leaderboard takes its model weights from the first result "
            f"(sha256 {str(_weights(checked[0][1]))[:12]}); pass --model-weights SHA256_OR_FOLDER "
            "to pin the genuine weights instead")
    for source, result, grid in checked:
        if grid is not None:
            target = thumbnail_path(leaderboard_path, result)
            if not target.is_file():
                atomic_write_bytes(target, grid)
        report.outcomes.append((source, merge(board, result)))
    board["entries"].sort(key=lambda e: (e["method"], e["config_sha256"]))
    board["columns"] = columns(suite, board["entries"])
    board["updated_utc"] = _now()
    atomic_write_text(leaderboard_path, json.dumps(board, indent=1, allow_nan=False) + "\n")
    return report


def find_entry(board: dict[str, Any], method: str, config_sha256: str | None = None) -> dict[str, Any]:
    matches = [e for e in board["entries"] if e["method"] == method
               and (config_sha256 is None or e["config_sha256"].startswith(config_sha256))]
    if not matches:
        known = ", ".join(f"{e['method']} ({e['config_sha256'][:8]})" for e in board["entries"]) or "none"
        raise ValidationError(f"no entry for method '{method}'"
                              + (f" with config {config_sha256}" if config_sha256 else "")
                              + f" on this leaderboard; entries: {known}")
    if len(matches) > 1:
        configs = ", ".join(e["config_sha256"][:8] for e in matches)
        raise ValidationError(f"method '{method}' has {len(matches)} configs here ({configs}): pass --config-sha256")
    return matches[0]
