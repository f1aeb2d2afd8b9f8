"""The one atomic write and the one strict JSON reader every file of the package goes through."""

import json
import os

import pytest

from memorybench.core.io import atomic_write_bytes, atomic_write_json, loads_strict, read_json_strict
from memorybench.errors import ValidationError


def test_atomic_write_replaces_whole_files_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "deep" / "result.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_bytes(path, b'{"a": 2}\n')
    assert json.loads(path.read_text()) == {"a": 2}
    assert sorted(os.listdir(path.parent)) == ["result.json"]
    assert path.stat().st_mode & 0o044  # readable by others (mkstemp alone would give 0600)


def test_a_write_removes_what_a_killed_writer_of_the_same_file_left(tmp_path):
    """kill -9 during a write leaves a temporary file; the next write of that file removes it,
    but never one of a live process, of another machine or of another file."""
    import subprocess
    import sys

    from memorybench.core import io

    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True).stdout)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = io._HOST
        names = {"orphan": f".r.json.{host}.{dead}.a1.tmp", "live": f".r.json.{host}.{live.pid}.b2.tmp",
                 "mine": f".r.json.{host}.{os.getpid()}.c3.tmp", "other host": f".r.json.elsewhere.{dead}.d4.tmp",
                 "other file": f".s.json.{host}.{dead}.e5.tmp", "unknown": ".r.json.x7.tmp"}
        for name in names.values():
            (tmp_path / name).write_bytes(b"torn")
        atomic_write_bytes(tmp_path / "r.json", b"{}")
        left = {what for what, name in names.items() if (tmp_path / name).exists()}
        assert left == set(names) - {"orphan"}
        assert (tmp_path / "r.json").read_bytes() == b"{}"
    finally:
        live.kill()
        live.wait()


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "board.json"
    atomic_write_json(path, {"kept": True})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"bad": float("nan")})  # refused before anything is written
    assert json.loads(path.read_text()) == {"kept": True}
    assert sorted(os.listdir(tmp_path)) == ["board.json"]


@pytest.mark.parametrize("text, reason", [
    ('{"value": NaN}', "non-finite number NaN"),
    ('{"value": Infinity}', "non-finite number Infinity"),
    ('{"value": 1e999}', "overflows"),
    ('{"sscd_mem": 0.1, "sscd_mem": 0.9}', "key 'sscd_mem' appears twice"),
])
def test_strict_reader_refuses_what_json_would_accept(text, reason):
    json.loads(text)  # the standard library takes all of these
    with pytest.raises(ValueError, match=reason):
        loads_strict(text)


def test_strict_file_reader_gives_one_line_errors(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(ValidationError, match="result file '.*nope.json' does not exist"):
        read_json_strict(missing, "result file")
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValidationError, match="nested too deeply"):
        read_json_strict(deep)
    broken = tmp_path / "broken.json"
    broken.write_text('{"a": ')
    with pytest.raises(ValidationError, match="is not valid JSON"):
        read_json_strict(broken)
    good = tmp_path / "good.json"
    good.write_text('{"a": [1, 2.5, "x"]}')
    assert read_json_strict(good) == {"a": [1, 2.5, "x"]}
