"""Leaderboards: publish validated results into ``leaderboards/<suite>.json``.

``publish`` takes result files, rejects any that could not be compared with the others
(another suite version or hash, a missing provenance field, a non-finite number, a summary
that disagrees with its metrics, a name that could escape a folder) with a one-line reason,
and merges the rest: one entry per (method, config sha256); a newer run of the same config
replaces the older one, which moves to the entry's ``history``. Nothing is written unless
every file passes, and the leaderboard is written atomically.

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

from memorybench.core.io import atomic_write_bytes, atomic_write_text, read_json_strict
from memorybench.core.config import sha256_json
from memorybench.errors import ConfigError, UnknownNameError, ValidationError
from memorybench.suites.spec import Suite, load_suite

LEADERBOARD_VERSION = 1
# Names that become (part of) file names or page anchors: no separators, no "..", no control chars.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
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


def check_result(result: Any, suite: Suite) -> None:
    """Raise ``ValidationError`` with the reason this result cannot join ``suite``'s leaderboard."""
    from memorybench.results.record import validate_result

    if not isinstance(result, dict):
        raise ValidationError("result is not a JSON object")
    method, suite_info = _section(result, "method"), _section(result, "suite")
    check_safe_name(method.get("name"), "method name")
    check_safe_name(suite_info.get("name"), "suite name")
    provenance = _section(result, "provenance")
    missing = [k for k in PROVENANCE_FIELDS if k not in provenance]
    if missing:
        raise ValidationError(f"missing provenance field(s): {', '.join(missing)}")
    validate_result(result)  # schema, finite numbers, summary == metrics
    if suite_info["name"] != suite.name:
        raise ValidationError(f"result is for suite '{suite_info['name']}', this leaderboard is for '{suite.name}'")
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
        result = read_json_strict(path, "result file")
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


def load_leaderboard(path: str | Path, suite: Suite | None = None) -> dict[str, Any]:
    """Read a leaderboard file; with ``suite``, check that it was built for that exact suite."""
    board = read_json_strict(path, "leaderboard")
    if not isinstance(board, dict) or board.get("leaderboard_version") != LEADERBOARD_VERSION \
            or not isinstance(board.get("entries"), list) or not isinstance(board.get("suite"), dict):
        raise ValidationError(f"leaderboard '{path}' is not a memorybench leaderboard v{LEADERBOARD_VERSION} file")
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
        name = read_json_strict(path, "leaderboard").get("suite", {}).get("name")
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


def _other_weights(board: dict[str, Any], checked: list[tuple[str, dict[str, Any], bytes | None]]) -> list[Rejected]:
    """One board ranks methods on one model: a suite names its model (``tinyworld``), but the
    weights behind that name change when a new world ships, and numbers from two worlds are
    not comparable. The board's weights are those of its entries, else of the first result."""
    if board["entries"]:
        reference, where = _weights(board["entries"][0]["result"]), "this leaderboard's entries"
    elif checked:
        reference, where = _weights(checked[0][1]), "the first result published with it"
    else:
        return []
    return [Rejected(source, f"result was made with model weights sha256 {str(_weights(result))[:12]}, {where} with "
                             f"{str(reference)[:12]}: results on other weights are not comparable (re-publish every "
                             "method on the new weights into a new leaderboard file)")
            for source, result, _ in checked if _weights(result) != reference]


def publish(result_paths: list[str | Path], leaderboard_path: str | Path,
            suite_name: str | None = None) -> PublishReport:
    """Check every result, then merge them all into the leaderboard (or nothing, on any rejection)."""
    leaderboard_path = Path(leaderboard_path)
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
        rejections = _other_weights(board, checked)
    if rejections:
        if len(rejections) == 1:
            raise rejections[0]
        raise ValidationError("; ".join(str(r) for r in rejections) + "; nothing published")
    report = PublishReport(leaderboard_path)
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
