"""memorybench compare: what differs in how two results were made, and paired CIs of each column."""

import copy
import json

import numpy as np
import pytest

from memorybench.cli import main
from memorybench.results.compare import compare_results, load_comparable
from memorybench.errors import ConfigError, ValidationError
from memorybench.results.leaderboard import publish
from memorybench.metrics.stats import bootstrap_ci
from memorybench.run.request import RunOptions
from memorybench.run.runner import run
from memorybench.suites.spec import load_suite


@pytest.fixture(scope="module")
def smoke_result(tmp_path_factory):
    """One real smoke-v1 run of `none` (random-weights pipeline), and its file.

    smoke-v1's columns are pooled, so the first one is given per-prompt values that average to
    it (spread +-0.02), the shape of tinyworld-v1's prompt-mean columns."""
    folder = tmp_path_factory.mktemp("results")
    out = folder / "none.json"
    options = RunOptions(output=str(out), cache_dir=str(tmp_path_factory.mktemp("cache")), progress=False, batch_size=8)
    result = run(load_suite("smoke-v1"), "none", None, options)
    name = next(iter(result["summary"]))
    prompts = load_suite("smoke-v1").prompt_sets[0].prompts
    spread = np.linspace(-0.02, 0.02, len(prompts))
    result["metrics"][name]["per_prompt"] = {p: result["summary"][name] + d for p, d in zip(prompts, spread)}
    return result, out


def _column(comparison, name):
    return next(c for c in comparison["columns"] if c["column"] == name)


def _per_prompt_column(result):
    return next(iter(result["summary"]))


def test_a_result_against_itself_differs_in_nothing(smoke_result):
    result, _ = smoke_result
    comparison = compare_results(result, copy.deepcopy(result))
    assert all(m["same"] for m in comparison["made_with"])
    assert comparison["columns"] and all(c["difference"] == 0 for c in comparison["columns"])
    paired = [c for c in comparison["columns"] if c["paired_ci95"]]
    assert paired and all(c["paired_ci95"] == [0.0, 0.0] and not c["paired_ci_excludes_zero"] for c in paired)


def test_paired_interval_of_a_known_shift_and_of_symmetric_noise(smoke_result):
    result, _ = smoke_result
    name = _per_prompt_column(result)
    per = result["metrics"][name]["per_prompt"]
    shifted = copy.deepcopy(result)
    for prompt in per:  # every prompt 0.1 higher: the paired CI is exactly [0.1, 0.1]
        shifted["metrics"][name]["per_prompt"][prompt] = per[prompt] + 0.1
    shifted["metrics"][name]["value"] = shifted["summary"][name] = result["summary"][name] + 0.1
    row = _column(compare_results(result, shifted), name)
    assert row["difference"] == pytest.approx(0.1)
    assert row["paired_ci95"] == pytest.approx([0.1, 0.1]) and row["paired_ci_excludes_zero"]
    assert row["paired_n"] == len(per)

    noisy = copy.deepcopy(result)  # +-0.1 alternating: mean change 0 (even count), CI straddles 0
    prompts = sorted(per)[: len(per) // 2 * 2]
    signs = {p: (0.1 if i % 2 == 0 else -0.1) for i, p in enumerate(prompts)}
    noisy["metrics"][name]["per_prompt"] = {p: per[p] + signs[p] for p in prompts}
    noisy["metrics"][name]["value"] = noisy["summary"][name] = float(np.mean(list(noisy["metrics"][name]["per_prompt"].values())))
    row = _column(compare_results(result, noisy), name)
    diffs = [signs[p] for p in prompts]
    assert row["paired_n"] == len(prompts) and row["paired_ci95"] == pytest.approx(list(bootstrap_ci(diffs)))
    assert row["paired_ci95"][0] < 0 < row["paired_ci95"][1] and not row["paired_ci_excludes_zero"]


def test_columns_that_are_not_prompt_means_get_no_paired_interval(smoke_result):
    result, _ = smoke_result
    name = _per_prompt_column(result)
    pooled = copy.deepcopy(result)  # a value no longer the mean of its per-prompt values (a pooled share, say)
    pooled["metrics"][name]["value"] = pooled["summary"][name] = result["summary"][name] + 0.05
    row = _column(compare_results(result, pooled), name)
    assert row["paired_ci95"] is None and row["difference"] == pytest.approx(0.05)


def test_how_they_were_made_names_each_difference(smoke_result):
    result, _ = smoke_result
    other = copy.deepcopy(result)
    other["model"]["dtype"] = "fp16"
    other["provenance"]["hardware"]["gpu"] = "NVIDIA H100 80GB HBM3"
    differing = {m["field"]: (m["a"], m["b"]) for m in compare_results(result, other)["made_with"] if not m["same"]}
    assert differing == {"dtype": (result["model"]["dtype"], "fp16"), "gpu": (None, "NVIDIA H100 80GB HBM3")}


def test_cli_compares_a_leaderboard_entry_with_a_result_file(smoke_result, tmp_path, capsys):
    result, path = smoke_result
    board = tmp_path / "board.json"
    publish([str(path)], board, suite_name="smoke-v1")
    with pytest.raises(ConfigError, match="is a leaderboard: name the entry with --method"):
        load_comparable(board)
    with pytest.raises(ValidationError, match="no entry for method 'wen-embedding-opt'"):
        load_comparable(board, "wen-embedding-opt")
    entry = load_comparable(board, "none", result["method"]["config_sha256"][:8])
    assert entry["summary"] == json.loads(path.read_text())["summary"] and entry["method"] == result["method"]
    assert main(["compare", str(board), str(path), "--method", "none", "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "made with: 17 of 17 fields the same" in out
    saved = json.loads((tmp_path / "c.json").read_text())
    assert {c["column"] for c in saved["columns"]} == set(result["summary"])
    assert main(["compare", str(tmp_path / "missing.json"), str(path)]) == 2
    assert "does not exist" in capsys.readouterr().err
