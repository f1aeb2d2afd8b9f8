"""publish / export model-index / report on real smoke-v1 results (random-weights pipeline)."""

import hashlib
import json
import re

import pytest
import yaml

from memorybench.cli import main
from memorybench.errors import ConfigError, ValidationError
from memorybench.results.leaderboard import Rejected, load_leaderboard, publish, thumbnail_path
from memorybench.results.model_index import model_index
from memorybench.results.report import write_report
from memorybench.run.request import RunOptions
from memorybench.run.runner import run
from memorybench.suites.spec import load_suite


def _run(folder, cache, method="none", settings=None, name=None):
    out = folder / (name or f"{method}.json")
    options = RunOptions(output=str(out), cache_dir=str(cache), progress=False, batch_size=8)
    return run(load_suite("smoke-v1"), method, settings, options), out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two real runs of `none` (the second served from the cache) and one of wanda-prune."""
    folder = tmp_path_factory.mktemp("results")
    cache = tmp_path_factory.mktemp("cache")
    first, first_path = _run(folder, cache, name="none-first.json")
    second, second_path = _run(folder, cache, name="none-second.json")
    wanda, wanda_path = _run(folder, cache, "wanda-prune", {"timesteps": 2})
    return {"first": first_path, "second": second_path, "wanda": wanda_path,
            "results": {"first": first, "second": second, "wanda": wanda}}


def _write_variant(tmp_path, source, change, name="variant.json", raw=None):
    """A copy of a result file (and its thumbnail grid) with ``change`` applied."""
    result = json.loads(source.read_text())
    change(result)
    target = tmp_path / name
    target.write_text(raw(result) if raw else json.dumps(result))
    grid = result.get("thumbnails", {}).get("file")
    if grid and (source.parent / grid).is_file() and not (tmp_path / grid).exists():
        (tmp_path / grid).write_bytes((source.parent / grid).read_bytes())
    return target


def test_publish_accepts_a_real_result_and_copies_its_thumbnails(runs, tmp_path):
    board_path = tmp_path / "smoke-v1.json"
    report = publish([runs["first"]], board_path)
    assert [what for _, what in report.outcomes] == [f"none (config {runs['results']['first']['method']['config_sha256'][:8]}): new entry"]
    board = load_leaderboard(board_path, load_suite("smoke-v1"))
    suite = load_suite("smoke-v1")
    assert board["suite"] == {"name": "smoke-v1", "version": suite.version, "sha256": suite.sha256()}
    (entry,) = board["entries"]
    assert entry["result"] == json.loads(runs["first"].read_text()) and entry["history"] == []
    assert [c["name"] for c in board["columns"]] == list(suite.summary)
    grid = thumbnail_path(board_path, entry["result"])
    assert grid.is_file() and hashlib.sha256(grid.read_bytes()).hexdigest() == entry["result"]["thumbnails"]["sha256"]
    assert grid.parent == tmp_path / "smoke-v1" / "thumbs"


@pytest.mark.parametrize("change, reason", [
    (lambda r: r["suite"].update(version=2), r"suite smoke-v1 v2 .* the current suite is v1"),
    (lambda r: r["suite"].update(sha256="0" * 64), r"sha256 000000000000, the current suite is v1 sha256"),
    (lambda r: r["summary"].update(pixel_diversity_general=r["summary"]["pixel_diversity_general"] + 0.1),
     r"summary 'pixel_diversity_general' = .* but metrics\['pixel_diversity_general'\]\.value"),
    (lambda r: r["provenance"].pop("command"), r"missing provenance field\(s\): command"),
    (lambda r: r["provenance"].pop("memorybench_commit"), r"missing provenance field\(s\): memorybench_commit"),
    (lambda r: r["method"].update(name="../../etc/evil"), r"method name .* contains a path separator"),
    (lambda r: r["method"].update(name=".."), r"method name '\.\.' contains '\.\.'"),
    (lambda r: r["method"].update(name="none\x1b[2J"), r"method name .* contains control characters"),
    (lambda r: r["method"].update(name="a\\b"), r"method name .* contains a path separator"),
    (lambda r: r["suite"].update(name="smoke-v1/.."), r"suite name .* contains a path separator"),
    (lambda r: r["thumbnails"].update(file="../grid.png"), r"thumbnails\.file: .* does not match"),
    (lambda r: r["summary"].pop("pixel_diversity_general"), r"summary columns .* are not the suite's"),
])
def test_publish_rejects_with_the_reason(runs, tmp_path, change, reason):
    bad = _write_variant(tmp_path, runs["first"], change)
    board_path = tmp_path / "smoke-v1.json"
    with pytest.raises(Rejected, match=reason) as info:
        publish([bad], board_path, suite_name="smoke-v1")
    assert info.value.source == str(bad) and "\n" not in str(info.value)
    assert not board_path.exists()  # nothing written


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_publish_rejects_non_finite_numbers(runs, tmp_path, token):
    def put_token(result):
        return json.dumps(result).replace('"__NONFINITE__"', token)

    bad = _write_variant(tmp_path, runs["first"],
                         lambda r: r["metrics"]["pixel_diversity_general"]["ci95"].__setitem__(1, "__NONFINITE__"),
                         raw=put_token)
    assert token in bad.read_text()
    with pytest.raises(Rejected, match=r"non-finite number"):
        publish([bad], tmp_path / "smoke-v1.json")


def test_one_rejection_publishes_nothing_and_a_changed_grid_is_caught(runs, tmp_path):
    board_path = tmp_path / "smoke-v1.json"
    publish([runs["first"]], board_path)
    before = board_path.read_bytes()
    tampered = _write_variant(tmp_path, runs["second"], lambda r: r["summary"].update(pixel_diversity_memorized=9.0))
    with pytest.raises(Rejected, match=r"rejected .*variant\.json: summary 'pixel_diversity_memorized'"):
        publish([runs["wanda"], tampered], board_path)
    assert board_path.read_bytes() == before
    other = _write_variant(tmp_path, runs["wanda"], lambda r: r["suite"].update(version=3), name="other.json")
    with pytest.raises(ValidationError, match=r"variant\.json: summary .*; rejected .*other\.json: .*v3.*; nothing published"):
        publish([tampered, runs["wanda"], other], board_path)
    assert board_path.read_bytes() == before
    # a grid changed after the run no longer matches the hash the result recorded
    moved = tmp_path / "moved"
    moved.mkdir()
    copied = _write_variant(moved, runs["second"], lambda r: None, name="copy.json")
    (moved / json.loads(copied.read_text())["thumbnails"]["file"]).write_bytes(b"not the grid")
    with pytest.raises(Rejected, match="does not match the sha256"):
        publish([copied], board_path)


def test_results_on_other_model_weights_are_rejected(runs, tmp_path):
    """Same suite, other weights (e.g. a newly shipped world): not comparable with the board."""
    board_path = tmp_path / "smoke-v1.json"
    other_model = lambda r: r["model"].update(weights_sha256="ab" * 32)  # noqa: E731
    retrained = _write_variant(tmp_path, runs["wanda"], other_model, name="retrained.json")
    publish([runs["first"]], board_path)
    before = board_path.read_bytes()
    with pytest.raises(Rejected, match=r"retrained\.json: result was made with model weights sha256 abababababab, "
                                       r"this leaderboard's entries with [0-9a-f]{12}"):
        publish([runs["wanda"], retrained], board_path)
    assert board_path.read_bytes() == before
    # a new board takes its weights from the first result, and one batch cannot mix two models
    with pytest.raises(Rejected, match="the first result published with it"):
        publish([runs["second"], retrained], tmp_path / "new" / "smoke-v1.json")
    assert publish([retrained], tmp_path / "fresh" / "smoke-v1.json").outcomes[0][1].endswith("new entry")


def test_result_for_another_suite_is_rejected(runs, tmp_path):
    with pytest.raises(Rejected, match="result is for suite 'smoke-v1', this leaderboard is for 'tinyworld-v1'"):
        publish([runs["first"]], tmp_path / "board.json", suite_name="tinyworld-v1")
    with pytest.raises(ConfigError, match="'board' is not a suite name: pass --suite NAME"):
        publish([runs["first"]], tmp_path / "board.json")


def test_merge_one_entry_per_config_newer_replaces_older_kept_in_history(runs, tmp_path):
    board_path = tmp_path / "smoke-v1.json"
    first, second = runs["results"]["first"], runs["results"]["second"]
    assert first["method"]["config_sha256"] == second["method"]["config_sha256"]
    older = _write_variant(tmp_path, runs["first"], lambda r: r["provenance"].update(created_utc="2000-01-01T00:00:00+00:00"),
                           name="older.json")
    publish([runs["first"], runs["wanda"]], board_path)
    report = publish([runs["second"]], board_path)
    assert "replaced the run of" in report.outcomes[0][1]
    board = load_leaderboard(board_path)
    assert sorted(e["method"] for e in board["entries"]) == ["none", "wanda-prune"]
    none = next(e for e in board["entries"] if e["method"] == "none")
    assert none["result"] == json.loads(runs["second"].read_text())
    assert [h["result"] for h in none["history"]] == [json.loads(runs["first"].read_text())]
    # the same file again: unchanged; an older run of the same config: history only, sorted newest first
    assert "already published, unchanged" in publish([runs["first"]], board_path).outcomes[0][1]
    assert "kept in history only" in publish([older], board_path).outcomes[0][1]
    none = next(e for e in load_leaderboard(board_path)["entries"] if e["method"] == "none")
    assert none["result"]["provenance"]["created_utc"] == second["provenance"]["created_utc"]
    assert [h["result"]["provenance"]["created_utc"] for h in none["history"]] == [
        first["provenance"]["created_utc"], "2000-01-01T00:00:00+00:00"]


def test_leaderboard_of_another_suite_version_is_refused(runs, tmp_path):
    board_path = tmp_path / "smoke-v1.json"
    publish([runs["first"]], board_path)
    board = json.loads(board_path.read_text())
    board["suite"]["version"] = 0
    board_path.write_text(json.dumps(board))
    with pytest.raises(ValidationError, match="publish into a new leaderboard file"):
        publish([runs["second"]], board_path)


def test_export_model_index(runs, tmp_path, capsys):
    board_path = tmp_path / "smoke-v1.json"
    publish([runs["first"], runs["wanda"]], board_path)
    assert main(["export", "model-index", "--leaderboard", str(board_path), "--method", "wanda-prune"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    wanda = runs["results"]["wanda"]
    (model,) = data["model-index"]
    assert model["name"].startswith(wanda["model"]["id"]) and "wanda-prune" in model["name"]
    (res,) = model["results"]
    assert res["task"]["type"] == "text-to-image"
    assert res["dataset"]["type"] == "memorybench/smoke-v1" and res["dataset"]["revision"] == wanda["suite"]["sha256"]
    assert {m["type"]: m["value"] for m in res["metrics"]} == wanda["summary"]
    assert all(m["verified"] is False and m["args"]["n"] > 0 for m in res["metrics"])
    out = tmp_path / "mi.json"
    assert main(["export", "model-index", "--leaderboard", str(board_path), "--method", "none",
                 "--format", "json", "--out", str(out)]) == 0
    assert json.loads(out.read_text()) == model_index(load_leaderboard(board_path)["entries"][0])
    assert main(["export", "model-index", "--leaderboard", str(board_path), "--method", "rta"]) == 2
    assert "no entry for method 'rta'" in capsys.readouterr().err


def test_report_writes_one_row_per_entry_plot_and_grids(runs, tmp_path):
    board_path = tmp_path / "smoke-v1.json"
    publish([runs["first"], runs["wanda"]], board_path)
    page = write_report(board_path, tmp_path / "site")
    text = page.read_text()
    rows = re.findall(r'<tr data-method="([^"]+)"', text)
    assert rows == ["none", "wanda-prune"]
    # smoke-v1 has no clip_gen/sscd_mem: the page says so instead of drawing an empty plot
    assert "No trade-off plot" in text
    for entry in load_leaderboard(board_path)["entries"]:
        sha = entry["result"]["thumbnails"]["sha256"]
        assert f'src="thumbs/{sha}.png"' in text and (tmp_path / "site" / "thumbs" / f"{sha}.png").is_file()
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing from elsewhere


def test_cli_publish_prints_reason_and_exits_2(runs, tmp_path, capsys):
    bad = _write_variant(tmp_path, runs["first"], lambda r: r["suite"].update(version=7))
    code = main(["publish", str(bad), "--leaderboard", str(tmp_path / "smoke-v1.json")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: rejected ") and "v7" in err and len(err.splitlines()) == 1
    assert main(["publish", str(runs["first"]), "--leaderboard", str(tmp_path / "smoke-v1.json")]) == 0
    assert "new entry" in capsys.readouterr().out


def test_thumbnail_grid_shows_the_memorized_generations(runs):
    import numpy as np
    from PIL import Image

    result = runs["results"]["first"]
    thumbs = result["thumbnails"]
    grid = np.asarray(Image.open(runs["first"].parent / thumbs["file"]))
    suite = load_suite("smoke-v1")
    px = suite.sampler.height
    assert thumbs["prompts"] == list(suite.prompt_set("memorized").prompts[suite.calibration_prompts:][:4])
    assert thumbs["seeds"] == [0, 1, 2] and thumbs["source_column"] is False and thumbs["cell_px"] == px
    assert grid.shape == (px * 3, px * 3, 3)
    # each cell differs (distinct seeds and prompts), so the grid is not blank
    cells = [grid[r * px:(r + 1) * px, c * px:(c + 1) * px] for r in range(3) for c in range(3)]
    assert len({cell.tobytes() for cell in cells}) == 9


# Board entries that run a method at settings other than its defaults, each documented on the
# suite's page: on tinyworld-defence-v1 dori-adv-finetune's default surrogate is the memorized image.
BOARD_SETTINGS = {
    "tinyworld-defence-v1": {"dori-adv-finetune": [
        {}, {"surrogate": "mitigated", "surrogate_candidates": 4, "drop_protected": True},
        {"surrogate": "mitigated", "surrogate_candidates": 4, "drop_protected": True, "every": 5, "search_steps": 10},
        {"surrogate": "mitigated", "surrogate_candidates": 4, "drop_protected": True, "every": 2, "search_steps": 10}]},
}


@pytest.mark.parametrize("board_name", ["tinyworld-v1", "finetune-dup-v1", "tinyworld-robust-v1", "finetune-dup-robust-v1",
                                        "tinyworld-defence-v1"])
def test_shipped_leaderboards_match_the_current_suites_and_defaults(board_name):
    """The shipped boards must be what `scripts/main.sh` reproduces: current suite, default configs
    (or the documented settings of BOARD_SETTINGS)."""
    from pathlib import Path

    from memorybench.api.method import METHODS

    board = load_leaderboard(Path(__file__).parent.parent / "leaderboards" / f"{board_name}.json")
    suite = load_suite(board["suite"]["name"])
    assert (board["suite"]["version"], board["suite"]["sha256"]) == (suite.version, suite.sha256())
    assert board["entries"]
    from memorybench.model.pipeline import folder_weights_sha256
    from memorybench.tinyworld import world_path

    shipped_weights = folder_weights_sha256(world_path() / "pipeline")
    for e in board["entries"]:
        assert e["result"]["model"]["weights_sha256"] == shipped_weights, f"{e['method']}: made on other world weights"
        allowed = {METHODS.get(e["method"]).from_settings(settings).config_sha256()
                   for settings in BOARD_SETTINGS.get(board_name, {}).get(e["method"], [{}])}
        assert e["config_sha256"] in allowed, f"{e['method']}: not at its current default config"


def test_report_per_prompt_table_shows_each_prompts_value():
    from memorybench.results.report import _per_prompt_table

    def entry(method, per):
        metric = {"higher_is_better": False, **({"per_prompt": per} if per is not None else {})}
        return {"method": method, "config_sha256": "ab" * 32, "result": {"metrics": {"sscd_mem": metric}}}

    entries = [entry("none", {"p <1>": 0.9, "p2": 0.5}), entry("wanda-prune", {"p <1>": 0.3}), entry("old", None)]
    html_text = _per_prompt_table(entries, ["none", "wanda-prune", "old"])
    rows = re.findall(r'<tr><th scope="row">(.*?)</th>(.*?)</tr>', html_text)
    assert [r[0] for r in rows] == ["p &lt;1&gt;", "p2"]  # escaped, in first-seen order
    assert re.findall(r'data-value="([^"]+)"', rows[0][1]) == ["0.9", "0.3"]
    assert '<td class="none">-</td>' in rows[1][1]  # wanda-prune has no value for p2
    assert "rgba(230, 120, 30, 0.75)" in rows[0][1] and "rgba(230, 120, 30, 0.00)" in rows[0][1]  # max, min
    assert "re-run to add them): old." in html_text
    assert _per_prompt_table([entry("none", None)], ["none"]) == ""
