"""``memorybench run --method a,b`` / ``all`` and the cost against `none` in each result."""

import json

import pytest

from memorybench.cli import main
from memorybench.run.cost import PROBE_REPEATS
from memorybench.errors import ConfigError
from memorybench.run.request import parse_method_list, split_settings
from memorybench.run.request import RunOptions
from memorybench.run.runner import run
from memorybench.suites.spec import load_suite

PLUGIN = '''
from dataclasses import dataclass
from memorybench import Method, register_method


@register_method()
class Exploding(Method):
    name = "test-exploding"
    kind = "weight-edit"

    def prepare(self, pipe, ctx):
        raise RuntimeError("prepare blew up on purpose")


@register_method()
class Trains(Method):
    name = "test-trains"
    kind = "training"


@dataclass
class SlowConfig:
    pause: float = 0.05


@register_method()
class Slow(Method):
    """Waits after every denoising step: at least steps x pause seconds per batch."""
    name = "test-slow"
    kind = "inference"
    Config = SlowConfig
    steps_seen = 0  # denoising steps run with this method applied, over all batches

    def on_step(self, pipe, step, t, latents):
        import time
        type(self).steps_seen += 1
        time.sleep(self.config.pause)
        return latents
'''


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "test_plugins.py"
    path.write_text(PLUGIN)
    return str(path)


def test_method_lists_and_settings():
    names = parse_method_list("all")
    assert names[0] == "none" and {"wanda-prune", "grad-projection", "attn-rescale"} <= set(names)
    assert parse_method_list("wanda-prune, none") == ["none", "wanda-prune"]
    with pytest.raises(ConfigError, match="more than once"):
        parse_method_list("none,none")
    with pytest.raises(Exception, match="unknown method 'wanda-prun'.*Did you mean 'wanda-prune'"):
        parse_method_list("none,wanda-prun")
    per = split_settings({"wanda-prune:sparsity": 0.02}, ["none", "wanda-prune"])
    assert per == {"none": {}, "wanda-prune": {"sparsity": 0.02}}
    with pytest.raises(ConfigError, match="name the method"):
        split_settings({"sparsity": 0.02}, ["none", "wanda-prune"])
    assert not load_suite("tinyworld-v1").fine_tunes and not load_suite("smoke-v1").fine_tunes
    assert load_suite("finetune-dup-v1").fine_tunes


def test_run_several_methods_goes_on_past_a_failure(tmp_path, plugin, capsys):
    out = tmp_path / "out"
    code = main(["run", "--suite", "smoke-v1", "--method", "none,test-exploding,test-trains,wanda-prune",
                 "--set", "wanda-prune:timesteps=2", "--output-dir", str(out), "--cache-dir", str(tmp_path / "cache"),
                 "--no-progress", "--plugins", plugin])
    captured = capsys.readouterr()
    assert code == 1
    assert "1 method(s) failed: test-exploding" in captured.err
    lines = [line.strip() for line in captured.out.splitlines()]
    assert any(line.startswith("failed  test-exploding: RuntimeError: prepare blew up on purpose") for line in lines)
    assert any(line.startswith("skipped test-trains: kind 'training'") and "smoke-v1" in line for line in lines)
    files = sorted(p.name for p in out.glob("*.json"))
    assert len(files) == 2 and files[0].startswith("none-") and files[1].startswith("wanda-prune-")
    wanda = json.loads((out / files[1]).read_text())
    assert wanda["method"]["config"]["timesteps"] == 2
    # the default name: METHOD-CONFIGHASH8.json
    assert files[1] == f"wanda-prune-{wanda['method']['config_sha256'][:8]}.json"
    assert (out / wanda["thumbnails"]["file"]).is_file()


def test_output_with_several_methods_is_refused(tmp_path, capsys):
    assert main(["run", "--suite", "smoke-v1", "--method", "none,wanda-prune", "--output", "x.json"]) == 2
    assert "use --output-dir" in capsys.readouterr().err


def test_cost_against_none_is_measured_in_the_run(tmp_path, plugin):
    from memorybench.api.method import METHODS
    from memorybench.api.registry import load_plugin

    load_plugin(plugin)
    slow = METHODS.get("test-slow")
    options = RunOptions(output=str(tmp_path / "slow.json"), cache_dir=str(tmp_path / "cache"), progress=False,
                         batch_size=32)
    result = run(load_suite("smoke-v1"), "test-slow", None, options)
    vs = result["cost"]["vs_none"]
    suite = load_suite("smoke-v1")
    first_eval = list(suite.prompt_set("memorized").prompts[suite.calibration_prompts:])
    assert vs["batch"]["prompt_set"] == "memorized" and vs["batch"]["images"] == min(4, len(first_eval))
    assert vs["batch"]["seed"] == 0 and vs["batch"]["steps"] == suite.sampler.steps
    assert vs["seconds_per_image_ratio"] == pytest.approx(
        vs["method"]["seconds_per_image"] / vs["none"]["seconds_per_image"])
    assert vs["method"]["seconds_per_image"] == min(vs["method"]["seconds_per_image_runs"])
    # the method side ran with the method (it sleeps 8 steps x 0.05 s per batch of 3 images: a floor
    # that no load can lower), the none side without it: 15 images in one batch + the timed repeats
    steps = suite.sampler.steps
    assert all(t >= steps * 0.05 / 3 for t in vs["method"]["seconds_per_image_runs"])
    assert slow.steps_seen == steps * (1 + vs["batch"]["repeats"]) and vs["batch"]["repeats"] == PROBE_REPEATS
    assert vs["measured_in"] == "this run" and vs["none"]["peak_memory_mb"] > 0
    assert result["cost"]["peak_memory_mb"] >= max(vs["method"]["peak_memory_mb"], vs["none"]["peak_memory_mb"])

    # a rerun served from the cache reports the measurement of the run that generated the images
    again = run(load_suite("smoke-v1"), "test-slow", None,
                RunOptions(output=str(tmp_path / "again.json"), cache_dir=str(tmp_path / "cache"), progress=False))
    assert again["cost"]["images_generated"] == 0
    assert again["cost"]["vs_none"]["method"] == vs["method"] and again["cost"]["vs_none"]["none"] == vs["none"]
    assert again["cost"]["vs_none"]["measured_in"].startswith("an earlier run")
