"""Publishing under attack: parallel publishers, forged or malformed results and leaderboards.

Results here are built in code (schema-valid, self-consistent smoke-v1 results with made-up
numbers), so each check takes milliseconds; tests/test_leaderboard.py publishes real runs.
"""

import datetime as dt
import json
import multiprocessing
import os

import pytest

from memorybench.cli import main
from memorybench.core.config import sha256_json
from memorybench.errors import ValidationError
from memorybench.results.leaderboard import Rejected, load_leaderboard, publish
from memorybench.suites.spec import load_suite

SUITE = load_suite("smoke-v1")
WEIGHTS = "ab" * 32


def make_result(method="none", config=None, created=None, value=0.5, suite=SUITE, weights=WEIGHTS):
    """A result (smoke-v1 by default) that passes every check publish makes."""
    config = {"strength": 1.0} if config is None else config
    created = created or dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    metrics = {name: {"value": value, "n": 12, "ci95": [value - 0.1, value + 0.1], "higher_is_better": True,
                      "implementation": "test", "protocol": {}} for name in suite.summary}
    side = {"seconds_per_image": 0.01, "peak_memory_mb": 100.0}
    return {
        "schema_version": 1,
        "suite": {"name": suite.name, "version": suite.version, "sha256": suite.sha256()},
        "method": {"name": method, "kind": "inference", "config": config, "config_sha256": sha256_json(config)},
        "model": {"id": "dummy-sd", "weights_sha256": weights, "sampler": "ddim", "steps": 8, "guidance": 7.5,
                  "dtype": "fp32", "resolution": [32, 32]},
        "summary": {name: value for name in suite.summary},
        "metrics": metrics,
        "cost": {"seconds_per_image": 0.01, "peak_memory_mb": 100.0, "preparation_seconds": 0.0,
                 "images_generated": 18, "images_from_cache": 0,
                 "vs_none": {"batch": {}, "method": side, "none": side, "seconds_per_image_ratio": 1.0,
                             "peak_memory_ratio": 1.0, "measured_in": "this run"}},
        "provenance": {"memorybench_version": "0.1.0", "memorybench_commit": None, "packages": {}, "python": "3.11",
                       "platform": "linux", "hardware": {}, "seeds": {}, "wall_seconds": 1.0,
                       "command": "memorybench run", "created_utc": created},
    }


def write(folder, name, result=None, raw=None):
    path = folder / name
    path.write_text(raw if raw is not None else json.dumps(result))
    return path


# -- parallel publishers --------------------------------------------------------------------
def _publish_one(path, board, barrier):
    barrier.wait()  # all start together: the window the lock must close
    publish([path], board)


def test_eight_parallel_publishers_lose_no_entry_20_times(tmp_path):
    ctx = multiprocessing.get_context("fork")
    paths = [write(tmp_path, f"r{i}.json", make_result(f"method-{i}")) for i in range(8)]
    for attempt in range(20):
        board = tmp_path / f"board{attempt}" / "smoke-v1.json"  # a new board each time (the harder case)
        barrier = ctx.Barrier(len(paths))
        procs = [ctx.Process(target=_publish_one, args=(p, board, barrier)) for p in paths]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0] * 8, f"attempt {attempt}"
        entries = load_leaderboard(board, SUITE)["entries"]
        assert sorted(e["method"] for e in entries) == [f"method-{i}" for i in range(8)], f"attempt {attempt}"
        assert not [n for n in os.listdir(board.parent) if n.endswith(".tmp")]


def test_parallel_publishers_into_an_existing_board(tmp_path):
    ctx = multiprocessing.get_context("fork")
    board = tmp_path / "smoke-v1.json"
    publish([write(tmp_path, "first.json", make_result("first"))], board)
    paths = [write(tmp_path, f"r{i}.json", make_result(f"m{i}")) for i in range(6)]
    barrier = ctx.Barrier(len(paths))
    procs = [ctx.Process(target=_publish_one, args=(p, board, barrier)) for p in paths]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert sorted(e["method"] for e in load_leaderboard(board)["entries"]) == ["first"] + [f"m{i}" for i in range(6)]


# -- forged or malformed results ------------------------------------------------------------
def _future():
    return (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)).isoformat()


def _set_ci(low, high):
    def change(r):
        r["metrics"][SUITE.summary[0]]["ci95"] = [low, high]
    return change


BAD_RESULTS = [
    ("config changed, old hash kept", lambda r: r["method"]["config"].update(strength=2.0),
     r"method\.config_sha256 [0-9a-f]{12} is not the hash of method\.config"),
    ("hash not of the config", lambda r: r["method"].update(config_sha256="0" * 64),
     r"method\.config_sha256 000000000000 is not the hash"),
    ("garbage time", lambda r: r["provenance"].update(created_utc="yesterday-ish"),
     r"provenance\.created_utc 'yesterday-ish' is not an ISO 8601 time"),
    ("future time", lambda r: r["provenance"].update(created_utc=_future()),
     r"provenance\.created_utc .* is in the future"),
    ("ancient time", lambda r: r["provenance"].update(created_utc="1970-01-01T00:00:00+00:00"),
     r"provenance\.created_utc .* is before 2000"),
    ("naive time", lambda r: r["provenance"].update(created_utc="2026-01-01T00:00:00"),
     r"provenance\.created_utc .* has no UTC offset"),
    ("absolute path id", lambda r: r["model"].update(id="/home/alice/models/sd15"),
     r"model\.id '/home/alice/models/sd15' starts like a local path"),
    ("relative path id", lambda r: r["model"].update(id="../models/sd15"), r"model\.id .* starts like a local path"),
    ("home path id", lambda r: r["model"].update(id="~/sd15"), r"model\.id .* starts like a local path"),
    ("windows path id", lambda r: r["model"].update(id="C:\\models\\sd"), r"model\.id .* starts like a local path"),
    ("deep path id", lambda r: r["model"].update(id="data/models/sd15"), r"model\.id .* more than one '/'"),
    ("url id", lambda r: r["model"].update(id="file://x"), r"model\.id .* is a URL"),
    ("CI excludes value", _set_ci(0.6, 0.7), r"metrics\.pixel_diversity_memorized\.ci95 \[0\.6, 0\.7\] does not contain its value 0\.5"),
    ("CI reversed", _set_ci(0.7, 0.3), r"the low bound is above the high bound"),
    ("CI half null", _set_ci(None, 0.7), r"both bounds or neither must be null"),
    ("huge string", lambda r: r["provenance"].update(command="x" * (10 * 1024 * 1024)),
     r"provenance\.command is a string of 10485760 characters, more than the 65536"),
    ("huge key", lambda r: r["method"].update(report={"k" * 70000: 1}),
     r"method\.report has a key of 70000 characters"),
    ("string summary", lambda r: r["summary"].update({SUITE.summary[0]: "0.5"}),
     r"summary\.pixel_diversity_memorized: '0\.5' is not of type 'number'"),
]


@pytest.mark.parametrize("label, change, reason", BAD_RESULTS, ids=[b[0] for b in BAD_RESULTS])
def test_forged_results_are_rejected_naming_the_field(tmp_path, capsys, label, change, reason):
    board = tmp_path / "smoke-v1.json"
    publish([write(tmp_path, "good.json", make_result("good"))], board)
    before = board.read_bytes()
    result = make_result("bad")
    change(result)
    bad = write(tmp_path, "bad.json", result)
    with pytest.raises(Rejected, match=reason):
        publish([bad], board)
    assert main(["publish", str(bad), "--leaderboard", str(board)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: rejected ")
    assert board.read_bytes() == before


@pytest.mark.parametrize("label, raw, reason", [
    ("duplicate key", lambda text: text.replace('"schema_version": 1', '"schema_version": 1, "schema_version": 1'),
     "key 'schema_version' appears twice"),
    ("deep nesting", lambda text: text[:-1] + ', "x": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
    ("moderate nesting", lambda text: text[:-1] + ', "x": ' + "[" * 500 + "]" * 500 + "}", "more than 64 levels"),
    ("NaN", lambda text: text.replace('"value": 0.5', '"value": NaN', 1), "non-finite number NaN"),
    ("not UTF-8", lambda text: text.replace("dummy-sd", "dummy\udcff").encode("utf-8", "surrogateescape"), "not UTF-8"),
    ("too large", lambda text: text[:-1] + ', "pad": "' + "x" * (17 * 1024 * 1024) + '"}', "larger than the 16 MiB"),
])
def test_malformed_result_files_are_one_line_exit_2(tmp_path, capsys, label, raw, reason):
    board = tmp_path / "smoke-v1.json"
    data = raw(json.dumps(make_result()))
    bad = tmp_path / "bad.json"
    bad.write_bytes(data if isinstance(data, bytes) else data.encode())
    assert main(["publish", str(bad), "--leaderboard", str(board)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and reason in err, err[:500]
    assert not board.exists()


def test_a_good_result_passes_every_check(tmp_path):
    report = publish([write(tmp_path, "ok.json", make_result("ok", created="2000-01-01T00:00:00+00:00"))],
                     tmp_path / "smoke-v1.json")
    assert report.outcomes[0][1].endswith("new entry")
    ok = make_result("org", created=(dt.datetime.now(dt.timezone.utc) + dt.timedelta(minutes=5)).isoformat())
    ok["model"]["id"] = "stabilityai/stable-diffusion-2-1"  # an ORG/NAME id is a name, not a path
    assert publish([write(tmp_path, "org.json", ok)], tmp_path / "smoke-v1.json").outcomes[0][1].endswith("new entry")


# -- malformed leaderboards -----------------------------------------------------------------
def _board_variants():
    def entry0(b):
        return b["entries"][0]
    return [
        ("a list", lambda b: [b], "not a JSON object"),
        ("suite a string", lambda b: b.update(suite="smoke-v1"), "suite must be an object"),
        ("entries an object", lambda b: b.update(entries={}), "entries is not a list"),
        ("entry a string", lambda b: b["entries"].append("x"), r"entries\[1\] is not an object"),
        ("entry without result", lambda b: entry0(b).pop("result"), r"entries\[0\]\.result is not an object"),
        ("result a list", lambda b: entry0(b).update(result=[]), r"entries\[0\]\.result is not an object"),
        ("method a number", lambda b: entry0(b).update(method=3), r"entries\[0\]\.method must be a non-empty string"),
        ("config hash a list", lambda b: entry0(b).update(config_sha256=[]), r"config_sha256 is not a sha256"),
        ("history an object", lambda b: entry0(b).update(history={}), r"history is not a list"),
        ("history item a number", lambda b: entry0(b).update(history=[1]), r"history\[0\] is not an object"),
        ("string summary value", lambda b: entry0(b)["result"]["summary"].update({SUITE.summary[0]: "high"}),
         r"is not of type 'number'"),
        ("edited result", lambda b: entry0(b)["result"]["cost"].update(seconds_per_image=9.0),
         r"result_sha256 is not the hash of its result"),
        ("columns a string", lambda b: b.update(columns="abc"), "columns must be a list"),
        ("no columns", lambda b: b.__delitem__("columns"), "columns is missing"),
        ("no updated_utc", lambda b: b.__delitem__("updated_utc"), "updated_utc is missing"),
        ("metrics a list", lambda b: entry0(b)["result"].update(metrics=[]), r"is not of type 'object'"),
        ("version a string", lambda b: b.update(leaderboard_version="1"), "leaderboard_version is '1'"),
        ("entry of another method", lambda b: entry0(b).update(method="other"), "not those of its result"),
    ]


@pytest.mark.parametrize("label, change, reason", _board_variants(), ids=[v[0] for v in _board_variants()])
def test_malformed_leaderboards_are_one_line_exit_2(tmp_path, capsys, label, change, reason):
    import re

    board = tmp_path / "smoke-v1.json"
    publish([write(tmp_path, "a.json", make_result("a"))], board)
    data = json.loads(board.read_text())
    changed = change(data)
    data = changed if isinstance(changed, list) else data
    board.write_text(json.dumps(data))
    before = board.read_bytes()
    new = write(tmp_path, "b.json", make_result("b"))
    for argv in (["publish", str(new), "--leaderboard", str(board), "--suite", "smoke-v1"],
                 ["report", "--leaderboard", str(board), "--out", str(tmp_path / "site")],
                 ["export", "model-index", "--leaderboard", str(board), "--method", "a"],
                 ["compare", str(board), str(board), "--method", "a"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1, (argv, err)
        assert argv[0] == "compare" or re.search(reason, err), (argv, err)
        assert not re.search(r"AttributeError|KeyError|TypeError|RecursionError", err)
    assert board.read_bytes() == before


def test_shipped_leaderboards_pass_the_field_checks():
    from pathlib import Path

    for name in ("tinyworld-v1", "finetune-dup-v1"):
        board = load_leaderboard(Path(__file__).parent.parent / "leaderboards" / f"{name}.json")
        assert board["entries"]


def test_a_crafted_history_is_refused_too(tmp_path):
    board = tmp_path / "smoke-v1.json"
    publish([write(tmp_path, "a.json", make_result("a"))], board)
    publish([write(tmp_path, "a2.json", make_result("a", value=0.6))], board)
    data = json.loads(board.read_text())
    data["entries"][0]["history"][0]["result"]["summary"][SUITE.summary[0]] = "x"
    board.write_text(json.dumps(data))
    with pytest.raises(ValidationError, match=r"entries\[0\]\.history\[0\]\.result: "):
        load_leaderboard(board)


def test_a_new_tinyworld_board_takes_the_installed_worlds_weights_not_the_first_results(tmp_path):
    from memorybench.results.leaderboard import suite_weights

    suite = load_suite("tinyworld-v1")
    real = suite_weights(suite)
    assert real is not None and len(real) == 64
    fake = write(tmp_path, "fake.json", make_result("fake", suite=suite, weights="cd" * 32))
    board = tmp_path / "tinyworld-v1.json"
    with pytest.raises(Rejected, match="sha256 cdcdcdcdcdcd, suite tinyworld-v1 runs on the installed tiny world with "
                                       + real[:12]):
        publish([fake], board)
    assert not board.exists()
    genuine = write(tmp_path, "genuine.json", make_result("genuine", suite=suite, weights=real))
    assert publish([genuine], board).outcomes[0][1].endswith("new entry")


def test_model_weights_pin_a_board_on_a_model_given_by_path(tmp_path, capsys):
    """On a model given by path no installed world says which weights are genuine: the
    publisher pins them (a sha256, or the model folder to hash) so a first forged result
    cannot claim the board; without the pin, publish says whose weights the board took."""
    from memorybench.model.pipeline import folder_weights_sha256

    model = tmp_path / "model" / "unet"
    model.mkdir(parents=True)
    (model / "config.json").write_text('{"sample_size": 8}')
    genuine_weights = folder_weights_sha256(tmp_path / "model")
    fake = write(tmp_path, "fake.json", make_result("fake", weights="cd" * 32))
    genuine = write(tmp_path, "genuine.json", make_result("genuine", weights=genuine_weights))
    board = tmp_path / "smoke-v1.json"

    for pin, given in ((genuine_weights.upper(), "(--model-weights)"),
                       (str(tmp_path / "model"), "(--model-weights, folder 'model')")):
        assert main(["publish", str(fake), "--leaderboard", str(board), "--model-weights", pin]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and not board.exists()
        assert (f"result was made with model weights sha256 cdcdcdcdcdcd, this leaderboard is pinned {given} "
                f"to weights with {genuine_weights[:12]}") in err
    assert main(["publish", str(genuine), "--leaderboard", str(board), "--model-weights", str(tmp_path / "model")]) == 0
    assert capsys.readouterr().err == ""  # pinned: nothing to warn about
    before = board.read_bytes()
    # an existing board keeps its entries' weights, and a pin that disagrees with them is refused too
    assert main(["publish", str(fake), "--leaderboard", str(board)]) == 2
    assert main(["publish", str(write(tmp_path, "g2.json", make_result("g2", weights=genuine_weights))),
                 "--leaderboard", str(board), "--model-weights", "ef" * 32]) == 2
    assert board.read_bytes() == before
    capsys.readouterr()

    assert main(["publish", str(fake), "--leaderboard", str(board), "--model-weights", "not-a-hash"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --model-weights: expected a 64-digit sha256 or a local model folder, "
                   "got 'not-a-hash'")

    unpinned = tmp_path / "unpinned.json"
    assert main(["publish", str(fake), "--leaderboard", str(unpinned), "--suite", "smoke-v1"]) == 0
    assert capsys.readouterr().err.strip() == (
        "note: this new leaderboard takes its model weights from the first result (sha256 cdcdcdcdcdcd); "
        "pass --model-weights SHA256_OR_FOLDER to pin the genuine weights instead")


def test_a_full_disk_during_publish_leaves_the_board_as_it_was(tmp_path, monkeypatch, capsys):
    import errno

    board = tmp_path / "smoke-v1.json"
    publish([write(tmp_path, "a.json", make_result("a"))], board)
    before = board.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", no_space)
    assert main(["publish", str(write(tmp_path, "b.json", make_result("b"))), "--leaderboard", str(board)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: cannot write '{board}': No space left on device "
                   "(nothing was replaced; free space or fix permissions and rerun)")
    assert board.read_bytes() == before and not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
