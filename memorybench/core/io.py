"""Files on disk: one atomic write and one strict JSON reader for the whole package.

An atomic write goes to a temporary file in the destination folder, is flushed to disk and
then renamed over the destination, so a killed process leaves either the old file or the
new one, never half of one. The strict reader refuses what ``json`` would silently accept:
NaN and Infinity tokens, numbers that overflow to infinity, and keys given twice (the last
one would win, so a checked value could hide behind a duplicate), files larger than a limit
(read before parsing, so a huge file costs nothing) and nesting deeper than a limit (checked
without recursion, so no later recursive walk can overflow the stack).

Shared files that several processes update (a leaderboard, a cache manifest) are changed
under :func:`file_lock`, an advisory lock on a ``.lock`` file beside them: read, modify and
write back (atomically) while holding it, and no update is lost.

Cached files (images, embeddings, fine-tuned weights) are written with :func:`write_checked`,
which keeps their sha256 beside them, and read with :func:`read_checked`, which verifies it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

from memorybench.errors import MemorybenchError, ValidationError

# Limits of the strict reader (documented on the reliability page of the docs).
MAX_JSON_BYTES = 64 * 1024 * 1024  # any JSON file a user hands in (leaderboards are the largest)
MAX_JSON_DEPTH = 64  # nested objects/arrays; memorybench files nest about 10 deep
LOCK_TIMEOUT_S = 600.0  # how long a writer waits for another one's lock before giving up


class WriteError(MemorybenchError, OSError):
    """A file that could not be written (disk full, read-only, no permission): nothing was replaced."""


class LockTimeout(MemorybenchError):
    """Another process held a shared file's lock for longer than ``LOCK_TIMEOUT_S``."""

_UMASK = os.umask(0)  # reading the umask means setting it: once, at import
os.umask(_UMASK)


# The temporary file's name says which process wrote it, so that a later write of the same
# file can remove what a killed writer left behind (and never a live writer's file).
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` (parents created) so that readers never see a torn file.
    Temporary files of ``path`` left by a killed process of this machine are removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results and pages are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, MemorybenchError) and exc.errno in _WRITE_ERRNOS:
            error = WriteError(f"cannot write '{path}': {os.strerror(exc.errno)} "
                               "(nothing was replaced; free space or fix permissions and rerun)")
            error.errno = exc.errno
            raise error from exc
        raise
    remove_orphaned_temporaries(path)
    return path


def remove_orphaned_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files of ``path`` whose writer, a process of this machine, is gone
    (a ``kill -9`` during a write leaves one). Files of live processes, of other machines
    sharing the folder, and of unknown origin are left alone."""
    prefix = f".{path.name}."
    with os.scandir(path.parent) as entries:  # one listing of the folder, no pattern to compile
        names = [e.name for e in entries if e.name.startswith(prefix) and e.name.endswith(".tmp")]
    removed = []
    for name in names:
        host, _, rest = name[len(prefix):-len(".tmp")].partition(".")
        pid = rest.partition(".")[0]
        if host != _HOST or not pid.isdigit() or int(pid) == os.getpid() or _process_alive(int(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            (path.parent / name).unlink()
            removed.append(path.parent / name)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file of a shared file: ``.NAME.lock`` beside it."""
    path = Path(path)
    return path.parent / f".{path.name}.lock"


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, timeout: float | None = None) -> Iterator[None]:
    """Hold the advisory lock of ``path`` (another process taking it waits): wrap a whole
    read-modify-write in it so that two writers never both read the old content."""
    from filelock import FileLock, Timeout

    lock = lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    wait = LOCK_TIMEOUT_S if timeout is None else timeout
    try:
        with FileLock(str(lock), timeout=wait, poll_interval=0.01):
            yield
    except Timeout:
        raise LockTimeout(f"'{path}' is locked by another process (lock file '{lock}') for more than "
                          f"{wait:.0f} s: wait for it, or remove the lock file if no memorybench process runs") from None


def check_writable_destination(path: str | os.PathLike, what: str, is_dir: bool = False) -> Path:
    """Raise one ``ValidationError`` now if ``path`` could not be written later: a file where a
    folder is wanted (or the other way round), or a nearest existing folder that refuses a new
    file. Creates nothing that stays."""
    path = Path(path).expanduser()
    if path.exists():
        if is_dir and not path.is_dir():
            raise ValidationError(f"{what} '{path}' is an existing file, not a folder")
        if not is_dir and path.is_dir():
            raise ValidationError(f"{what} '{path}' is an existing folder, not a file")
    folder = path if is_dir else path.parent
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ValidationError(f"{what} '{path}': '{probe}' is a file, so the folder cannot be created")
    try:  # os.access says yes to root even on a read-only mount: try for real
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".memorybench-write-check.", suffix=".tmp")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ValidationError(f"{what} '{path}' cannot be written: '{probe}': {reason}") from None
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    """JSON text (no NaN/Infinity) with a final newline, written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


# -- checked files: a sha256 beside each cached file, verified on every read -------------
def digest_path(path: str | Path) -> Path:
    """Where the sha256 of a cached file lies: beside it, ``<name>.sha256``."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def warn(message: str) -> None:
    """A warning the user sees even when library warnings are silenced (the CLI silences them)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def write_checked(path: str | Path, data: bytes) -> str:
    """Write ``data`` atomically, then its sha256 beside it; returns the hash. A kill between
    the two leaves a whole file without a hash, which :func:`read_checked` treats as old."""
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(path, data)
    atomic_write_text(digest_path(path), digest + "\n")
    return digest


def discard(path: str | Path) -> None:
    for p in (Path(path), digest_path(path)):
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def read_checked(path: str | Path, what: str, whole: Callable[[bytes], bool] | None = None) -> bytes | None:
    """The bytes of a cached file when they match the hash beside it; None when it is absent.
    A damaged file (other hash, empty, no hash and not ``whole``) is reported, removed and
    None returned, so the caller makes it again."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    try:
        expected = digest_path(path).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        expected = None
    except (OSError, UnicodeDecodeError):
        expected = "unreadable"
    actual = hashlib.sha256(data).hexdigest()
    if expected == actual:
        return data
    if expected is None:
        if data and (whole is None or whole(data)):
            atomic_write_text(digest_path(path), actual + "\n")  # an older cache: adopt the whole file
            return data
        reason = "is empty" if not data else "does not decode and has no hash beside it"
    else:
        reason = "is empty" if not data else (f"has sha256 {actual[:12]}, not the {expected[:12]} recorded when "
                                             "it was written (truncated or changed on disk)")
    warn(f"cached {what} '{path}' {reason}: discarded, it will be made again")
    discard(path)
    return None



def _reject_constant(token: str) -> float:
    raise ValueError(f"non-finite number {token} (NaN and Infinity are not JSON numbers)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"non-finite number {text} (overflows to {value})")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key '{key}' appears twice in one object")
        out[key] = value
    return out


def loads_strict(text: str) -> Any:
    """JSON without NaN/Infinity, overflowing numbers or duplicate keys."""
    return json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                      object_pairs_hook=_unique_keys)


def json_depth(obj: Any) -> int:
    """Nesting depth of a JSON value (a scalar is 0), without recursion."""
    deepest, stack = 0, [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
            deepest = max(deepest, depth + 1)
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
            deepest = max(deepest, depth + 1)
    return deepest


def read_json_strict(path: str | os.PathLike, what: str = "file", max_bytes: int = MAX_JSON_BYTES,
                     max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``loads_strict`` of a UTF-8 file of at most ``max_bytes`` and ``max_depth``; any
    failure is one ``ValidationError`` naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise ValidationError(f"{what} '{path}' does not exist") from None
    except IsADirectoryError:
        raise ValidationError(f"{what} '{path}' is a folder, not a file") from None
    except OSError as exc:
        raise ValidationError(f"{what} '{path}' cannot be read: {exc}") from None
    if len(data) > max_bytes:
        raise ValidationError(f"{what} '{path}' is larger than the {max_bytes // (1024 * 1024)} MiB a "
                              "memorybench file may be")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{what} '{path}' is not UTF-8 text: {exc}") from None
    try:
        obj = loads_strict(text)
    except RecursionError:
        raise ValidationError(f"{what} '{path}' is nested too deeply to be a memorybench file") from None
    except ValueError as exc:  # JSONDecodeError is a ValueError too
        raise ValidationError(f"{what} '{path}' is not valid JSON: {exc}") from None
    if json_depth(obj) > max_depth:
        raise ValidationError(f"{what} '{path}' is nested too deeply to be a memorybench file "
                              f"(more than {max_depth} levels)")
    return obj
