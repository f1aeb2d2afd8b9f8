"""End-to-end runs on the smoke suite: result schema, cache hits, resume after a kill."""

import json
import math

import pytest

from memorybench.errors import ValidationError
from memorybench.model.pipeline import PipelineAdapter
from memorybench.results.record import read_result, validate_result, write_result
from memorybench.run.request import RunOptions
from memorybench.run.runner import run
from memorybench.results.schema import RESULT_SCHEMA
from memorybench.suites.spec import load_suite


def _run(tmp_path, cache_dir, name="r.json", method="none", settings=None, **kw):
    options = RunOptions(output=str(tmp_path / name), cache_dir=str(cache_dir), progress=False, batch_size=4, **kw)
    return run(load_suite("smoke-v1"), method, settings, options)


def test_result_is_schema_valid_and_complete(tmp_path, cache_dir):
    result = _run(tmp_path, cache_dir)
    again = read_result(tmp_path / "r.json")
    assert again == json.loads(json.dumps(result))
    assert set(result["summary"]) == {"pixel_diversity_memorized", "pixel_diversity_general"}
    for name, value in result["summary"].items():
        assert result["metrics"][name]["value"] == value and value > 0
    assert result["model"]["id"].startswith("dummy-random")
    prov = result["provenance"]
    assert prov["seeds"] == {"memorized": [0, 1, 2], "general": [0, 1, 2]}
    assert prov["packages"]["torch"] and prov["wall_seconds"] > 0
    assert result["cost"]["images_generated"] == 15 and result["cost"]["seconds_per_image"] > 0


def test_second_run_hits_the_cache_and_gives_the_same_numbers(tmp_path, cache_dir):
    first = _run(tmp_path, cache_dir, "a.json")
    second = _run(tmp_path, cache_dir, "b.json")
    assert second["cost"]["images_generated"] == 0 and second["cost"]["images_from_cache"] == 15
    assert second["summary"] == first["summary"]
    # a different config is a cache miss
    third = _run(tmp_path, cache_dir, "c.json", method="none")
    assert third["cost"]["images_from_cache"] == 15


def test_killed_run_resumes_without_regenerating(tmp_path, cache_dir, monkeypatch):
    reference = _run(tmp_path, tmp_path / "ref-cache", "ref.json")
    calls = {"n": 0}
    original = PipelineAdapter.generate

    def dies_after_two_batches(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return original(self, *a, **kw)

    monkeypatch.setattr(PipelineAdapter, "generate", dies_after_two_batches)
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path, cache_dir, "killed.json")
    assert not (tmp_path / "killed.json").exists()  # no partial result
    monkeypatch.setattr(PipelineAdapter, "generate", original)
    resumed = _run(tmp_path, cache_dir, "resumed.json")
    assert resumed["cost"]["images_from_cache"] == 8 and resumed["cost"]["images_generated"] == 7
    assert resumed["summary"] == pytest.approx(reference["summary"], abs=1e-6)


def test_schema_file_matches_code():
    from pathlib import Path

    shipped = json.loads((Path(__file__).parent.parent / "leaderboards/schema/result-v1.json").read_text())
    assert shipped == RESULT_SCHEMA


def test_tampered_or_nan_results_are_rejected(tmp_path, cache_dir):
    result = json.loads(json.dumps(_run(tmp_path, cache_dir)))
    bad = json.loads(json.dumps(result))
    bad["summary"]["pixel_diversity_general"] += 0.1
    with pytest.raises(ValidationError, match="summary 'pixel_diversity_general'"):
        validate_result(bad)
    bad = json.loads(json.dumps(result))
    bad["metrics"]["pixel_diversity_general"]["value"] = math.nan
    with pytest.raises(ValidationError, match="not a finite number"):
        write_result(bad, tmp_path / "nan.json")
    assert not (tmp_path / "nan.json").exists()
    bad = json.loads(json.dumps(result))
    del bad["provenance"]["command"]
    with pytest.raises(ValidationError, match="command"):
        validate_result(bad)


def test_two_accelerate_processes_share_the_work_and_agree(tmp_path, cache_dir):
    import subprocess
    import sys
    from pathlib import Path

    single = _run(tmp_path, tmp_path / "single-cache", "single.json")
    accelerate = Path(sys.executable).parent / "accelerate"
    out = tmp_path / "sharded.json"
    proc = subprocess.run(
        [str(accelerate), "launch", "--cpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "memorybench.cli", "run", "--suite", "smoke-v1", "--method", "none",
         "--cache-dir", str(cache_dir), "--output", str(out), "--no-progress", "--batch-size", "4"],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    sharded = json.loads(out.read_text())
    lines = (cache_dir / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 15  # each image generated once, by one of the two shards
    assert sharded["summary"] == single["summary"]  # same batches as one process: the same images


def test_provenance_commit_is_the_source_state_when_the_run_started(monkeypatch):
    """A commit made while a long run is going must not be credited to that run's results."""
    import subprocess

    from memorybench.core import provenance

    provenance.memorybench_commit.cache_clear()
    monkeypatch.setattr(provenance, "distribution", lambda name: (_ for _ in ()).throw(provenance.PackageNotFoundError()))

    def fake_git(commit, dirty):
        def fake(args, **kwargs):
            out = commit if "rev-parse" in args else (" M methods/x.py\n" if dirty else "")
            return subprocess.CompletedProcess(args, 0, stdout=out, stderr="")
        return fake

    monkeypatch.setattr(provenance.subprocess, "run", fake_git("a" * 40, True))
    at_start = provenance.collect(["memorybench", "run"])  # what `run` reads when it starts
    monkeypatch.setattr(provenance.subprocess, "run", fake_git("b" * 40, False))  # committed mid-run
    at_write = provenance.collect(["memorybench", "run"])
    assert (at_write["memorybench_commit"], at_write["memorybench_dirty"]) == ("a" * 40, True)
    assert at_start["memorybench_commit"] == at_write["memorybench_commit"]
    provenance.memorybench_commit.cache_clear()  # a new process sees the new commit
    assert provenance.collect()["memorybench_commit"] == "b" * 40
    provenance.memorybench_commit.cache_clear()


def test_dirty_means_uncommitted_source_not_result_files(tmp_path):
    import subprocess

    from memorybench.core.provenance import source_dirty

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "memorybench").mkdir()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "memorybench" / "core.py").write_text("x = 1\n")
    (tmp_path / "benchmarks" / "results" / "sweep.json").write_text("{}\n")
    (tmp_path / "benchmarks" / "bench.py").write_text("y = 1\n")
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    assert not source_dirty(tmp_path)
    (tmp_path / "benchmarks" / "results" / "sweep.json").write_text('{"rows": []}\n')  # a run's own output
    assert not source_dirty(tmp_path)
    (tmp_path / "benchmarks" / "bench.py").write_text("y = 2\n")
    assert source_dirty(tmp_path)
    git("checkout", "--", "benchmarks/bench.py")
    (tmp_path / "memorybench" / "core.py").write_text("x = 2\n")
    assert source_dirty(tmp_path)
