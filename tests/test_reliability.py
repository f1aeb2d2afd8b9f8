"""Faults a user or a machine can cause, tried on the smoke suite: damaged cache files, a
killed or interrupted run, a full disk, parallel runs on one cache, bad destinations and
hostile inputs. Each test asserts that nothing is lost and the numbers do not change.

The tests on real runs are marked slow (CI runs them); the checks they rely on have fast
tests here too (the cache's hash check, the destinations, the inputs)."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from memorybench.cli import main
from memorybench.core.io import digest_path, read_checked, write_checked

SMOKE_IMAGES = 15  # 4 memorized prompts (1 for calibration) + 2 general, 3 seeds each


def _argv(cache, out, batch_size=4):
    """smoke-v1 at 2 sampler steps (a quarter of the work; what is tested does not depend on it)."""
    return ["run", "--suite", "smoke-v1", "--method", "none", "--cache-dir", str(cache), "--output", str(out),
            "--no-progress", "--steps", "2", "--batch-size", str(batch_size)]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """One clean run: its cache (copied by each test) and its summary (what every test must get back)."""
    folder = tmp_path_factory.mktemp("clean")
    cache, out = folder / "cache", folder / "clean.json"
    assert main(_argv(cache, out)) == 0
    result = json.loads(out.read_text())
    images = sorted((cache / "images").rglob("*.png"))
    assert len(images) == SMOKE_IMAGES and all(digest_path(p).is_file() for p in images)
    return {"cache": cache, "result": result, "summary": result["summary"], "out": out}


def _copy(clean, tmp_path):
    target = tmp_path / "cache"
    shutil.copytree(clean["cache"], target)
    return target, sorted((target / "images").rglob("*.png"))


def _remove(images):
    for p in images:
        p.unlink()
        digest_path(p).unlink()


def _manifest_digests(cache):
    out = []
    for line in (cache / "manifest.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line)["digest"])
        except ValueError:  # a line torn by a kill
            continue
    return out


def _all_intact(cache):
    """Every cached image matches the hash beside it, and no temporary file is left."""
    images = sorted((cache / "images").rglob("*.png"))
    return all(read_checked(p, "image") is not None for p in images) and not list(cache.rglob("*.tmp"))


# -- cache integrity ------------------------------------------------------------------------
@pytest.mark.slow  # real smoke-v1 runs: about a minute of CPU
def test_damaged_cached_images_are_named_regenerated_and_change_nothing(clean, tmp_path, capfd):
    cache, images = _copy(clean, tmp_path)
    flipped, truncated, emptied, swapped, legacy, legacy_broken = images[:6]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the compressed pixels
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    emptied.write_bytes(b"")
    swapped.write_bytes(images[7].read_bytes())  # another whole, valid PNG: decodes fine, wrong content
    digest_path(legacy).unlink()  # an image from before hashes were kept: used when it decodes whole
    digest_path(legacy_broken).unlink()
    legacy_broken.write_bytes(legacy_broken.read_bytes()[:50])
    capfd.readouterr()
    out = tmp_path / "again.json"
    assert main(_argv(cache, out)) == 0
    err = capfd.readouterr().err
    for damaged in (flipped, truncated, emptied, swapped, legacy_broken):
        assert f"warning: cached image '{damaged}'" in err
    assert str(legacy) not in err and "is empty" in err and "truncated or changed on disk" in err
    result = json.loads(out.read_text())
    assert result["cost"]["images_generated"] == 5 and result["cost"]["images_from_cache"] == SMOKE_IMAGES - 5
    assert result["summary"] == clean["summary"]
    assert _all_intact(cache) and digest_path(legacy).is_file()


def test_the_cache_refuses_a_damaged_image_and_names_it(tmp_path, capfd):
    import numpy as np

    from memorybench.run.cache import GenerationCache, GenerationKey

    cache = GenerationCache(tmp_path)
    rng = np.random.default_rng(0)
    keys = [GenerationKey("a" * 64, "none", "b" * 64, f"p{i}", 0, "ddim", 2, 7.5, 16, 16, "fp32") for i in range(4)]
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in keys]
    for key, image in zip(keys, images):
        cache.store(key, image, seconds=0.1)
    assert all(cache.has(k) for k in keys) and (cache.load(keys[0]) == images[0]).all()
    records = list(cache.records())
    assert [r["png_sha256"] for r in records] == [digest_path(cache.path_for(k)).read_text().strip() for k in keys]
    flipped, emptied, swapped = (cache.path_for(k) for k in keys[:3])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x04  # a flipped bit
    flipped.write_bytes(bytes(data))
    emptied.write_bytes(b"")
    swapped.write_bytes(cache.path_for(keys[3]).read_bytes())  # a whole PNG that decodes, of other pixels
    capfd.readouterr()
    assert [cache.has(k) for k in keys] == [False, False, False, True]
    err = capfd.readouterr().err
    assert f"warning: cached image '{flipped}' has sha256" in err and f"'{emptied}' is empty" in err
    assert f"warning: cached image '{swapped}' has sha256" in err
    assert not flipped.exists() and not digest_path(flipped).exists()
    cache.store(keys[0], images[0], seconds=0.1)  # what the runner does next
    assert (cache.load(keys[0]) == images[0]).all()


def test_checked_files_catch_flips_truncation_and_emptiness(tmp_path, capfd):
    """The same check guards cached embeddings and fine-tuned weights (write_checked / read_checked)."""
    import numpy as np

    path = tmp_path / "embeddings" / "k.npy"
    payload = np.arange(64, dtype=np.float32).tobytes()
    write_checked(path, payload)
    assert read_checked(path, "SSCD embeddings") == payload
    for damage in (lambda b: b[:-1], lambda b: b"", lambda b: bytes([b[0] ^ 0x80]) + b[1:]):
        write_checked(path, payload)
        path.write_bytes(damage(payload))
        assert read_checked(path, "SSCD embeddings") is None
        assert f"warning: cached SSCD embeddings '{path}'" in capfd.readouterr().err
        assert not path.exists() and not digest_path(path).exists()  # made again by the caller
    assert read_checked(tmp_path / "absent.npy", "x") is None and capfd.readouterr().err == ""


def test_cached_embeddings_are_recomputed_when_damaged(tmp_path, capfd):
    import numpy as np

    from memorybench.metrics.plugins.tinyworld_copy import cached_embeddings

    class Embedder:
        implementation = "test"
        calls = 0

        def embed(self, images):
            Embedder.calls += 1
            return images.reshape(len(images), -1).astype(np.float32) / 255

    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    first = cached_embeddings(Embedder(), images, "d" * 64, tmp_path)
    (path,) = (tmp_path / "embeddings").glob("*.npy")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x40  # a flipped bit in the last float: np.load would read it without a word
    path.write_bytes(bytes(data))
    again = cached_embeddings(Embedder(), images, "d" * 64, tmp_path)
    assert Embedder.calls == 2 and np.array_equal(first, again) and "cached SSCD embeddings" in capfd.readouterr().err


def test_damaged_fine_tuned_weights_are_named_and_trained_again_to_the_same_bytes(tmp_path, capfd):
    """A cached fine-tune with a flipped bit would still load as safetensors: the hash beside
    it catches it, the fine-tune is run again and gives the same weights, bit for bit."""
    import torch

    from memorybench import METHODS
    from memorybench.api.method import MethodContext
    from memorybench.model.pipeline import PipelineAdapter
    from memorybench.run.finetune import SuiteFinetune
    from memorybench.suites.finetune import FinetuneRecipe
    from tiny_finetune import tiny_set

    torch.manual_seed(0)
    pipe = PipelineAdapter.dummy(seed=0)
    ft = SuiteFinetune(pipe, FinetuneRecipe(steps=4, batch=4, warmup=1), tiny_set(), tmp_path, progress=False)
    none = METHODS.get("none")()

    def tuned(expect_from_cache):
        ctx = MethodContext()
        with ft.applied(none, ctx):
            state = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
        assert ctx.report["finetune"]["from_cache"] is expect_from_cache
        return state

    first, path = tuned(False), ft.cache_path(none)
    original = path.read_bytes()
    for damage in (lambda b: b[: len(b) // 2], lambda b: b"",
                   lambda b: b[:-9] + bytes([b[-9] ^ 0x01]) + b[-8:]):  # a bit in the last tensor's data
        path.write_bytes(damage(original))
        again = tuned(False)
        assert f"warning: cached fine-tuned weights '{path}'" in capfd.readouterr().err
        assert all(torch.equal(first[k], again[k]) for k in first)  # the bytes differ only in the recorded seconds
    assert tuned(True).keys() == first.keys() and capfd.readouterr().err == ""


# -- faults during a run --------------------------------------------------------------------
@pytest.mark.slow  # real smoke-v1 runs: about a minute of CPU
def test_ctrl_c_exits_130_and_the_rerun_resumes(clean, tmp_path, monkeypatch, capfd):
    from memorybench.model.pipeline import PipelineAdapter

    cache, images = _copy(clean, tmp_path)
    _remove(images[:6])
    original, calls = PipelineAdapter.generate, {"n": 0}

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PipelineAdapter, "generate", interrupted)
    out = tmp_path / "r.json"
    lines_before = len(_manifest_digests(cache))
    assert main(_argv(cache, out, batch_size=2)) == 130  # batches of 2: one stored, then Ctrl-C
    assert "rerun the same command to resume" in capfd.readouterr().err
    assert not out.exists() and _all_intact(cache)
    stored = len(_manifest_digests(cache)) - lines_before  # the first batch's missing images (1 or 2)
    assert 1 <= stored <= 2
    monkeypatch.setattr(PipelineAdapter, "generate", original)
    assert main(_argv(cache, out)) == 0
    result = json.loads(out.read_text())
    assert result["cost"]["images_generated"] == 6 - stored and result["summary"] == clean["summary"]
    digests = _manifest_digests(cache)
    assert len(digests) == SMOKE_IMAGES + 6 and len(set(digests)) == SMOKE_IMAGES  # each removed one made once


def _failing_fsync_after(n):
    real, calls = os.fsync, {"n": 0}

    def fsync(fd):
        calls["n"] += 1
        if calls["n"] > n:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)
    return fsync


@pytest.mark.slow  # real smoke-v1 runs: about a minute of CPU
def test_a_full_disk_is_one_line_and_loses_nothing(clean, tmp_path, monkeypatch, capfd):
    cache, images = _copy(clean, tmp_path)
    _remove(images[:3])
    out = tmp_path / "r.json"
    monkeypatch.setattr(os, "fsync", _failing_fsync_after(3))  # the prepare record, one image and its hash
    assert main(_argv(cache, out)) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "No space left on device" in err and "nothing was replaced" in err
    assert not out.exists() and _all_intact(cache)
    assert len(list((cache / "images").rglob("*.png"))) == SMOKE_IMAGES - 2
    monkeypatch.undo()
    assert main(_argv(cache, out)) == 0
    result = json.loads(out.read_text())
    assert result["cost"]["images_generated"] == 2 and result["summary"] == clean["summary"]
    # (a publish on a full disk: tests/test_publish_integrity.py)


def _subprocess_run(cache, out, batch_size=1):
    argv = _argv(cache, out, batch_size)
    return subprocess.Popen([sys.executable, "-m", "memorybench.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.slow  # real smoke-v1 runs: about a minute of CPU
def test_kill_9_during_generation_then_rerun(clean, tmp_path):
    cache, images = _copy(clean, tmp_path)
    removed = images[:8]
    _remove(removed)
    lines_before = len(_manifest_digests(cache))
    proc = _subprocess_run(cache, tmp_path / "killed.json")
    deadline = time.monotonic() + 300
    while len((cache / "manifest.jsonl").read_text().splitlines()) < lines_before + 3:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "killed.json").exists()
    made = [p for p in removed if read_checked(p, "image") is not None]
    assert 3 <= len(made) < len(removed)
    out = tmp_path / "resumed.json"
    assert main(_argv(cache, out)) == 0
    result = json.loads(out.read_text())
    assert result["cost"]["images_generated"] == len(removed) - len(made)  # none of the killed run's work redone
    assert result["summary"] == clean["summary"] and _all_intact(cache)
    digests = _manifest_digests(cache)
    assert all(digests.count(d) <= 2 for d in set(digests))


# A run in a subprocess whose generation is slowed, and which starts generating only when its
# partner is ready too: the two are sure to overlap. Each batch made is logged to a file.
_PARALLEL_RUN = """
import sys, time
from pathlib import Path
from memorybench.model.pipeline import PipelineAdapter

log, me, partner = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
real = PipelineAdapter.generate

def generate(self, prompts, seeds, settings, **kw):
    if not me.exists():
        me.touch()
        deadline = time.monotonic() + 300
        while not partner.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    time.sleep(1.0)
    with open(log, "a") as f:
        f.write(f"{len(prompts)}\\n")
    return real(self, prompts, seeds, settings, **kw)

PipelineAdapter.generate = generate
from memorybench.cli import main
sys.exit(main(sys.argv[4:]))
"""


@pytest.mark.slow
def test_two_runs_in_parallel_on_one_cache_make_each_image_once(clean, tmp_path):
    cache, images = _copy(clean, tmp_path)
    _remove(images[:9])
    lines_before = len(_manifest_digests(cache))
    log, ready = tmp_path / "generated.log", [tmp_path / "ready0", tmp_path / "ready1"]
    procs = [subprocess.Popen([sys.executable, "-c", _PARALLEL_RUN, str(log), str(ready[i]), str(ready[1 - i]),
                               *_argv(cache, tmp_path / f"r{i}.json", batch_size=3)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    results = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(2)]
    for result in results:
        assert result["summary"] == clean["summary"]
    assert all(p.exists() for p in ready)  # both reached generation, so they overlapped
    made = [int(n) for n in log.read_text().split()]
    assert sum(made) == 9  # each missing image made once, by one of the two runs
    assert sum(r["cost"]["images_generated"] for r in results) == 9
    assert len(_manifest_digests(cache)) == lines_before + 9
    assert _all_intact(cache) and len(list((cache / "images").rglob("*.png"))) == SMOKE_IMAGES


_HOLD_CLAIM = """
import sys, time
from memorybench.run.cache import GenerationCache, GenerationKey
keys = [GenerationKey("w", "none", "c", p, 0, "ddim", 2, 7.5, 64, 64, "float32") for p in ("a", "b")]
with GenerationCache(sys.argv[1]).claim(keys, wait=False) as mine:
    print("held" if mine else "refused", flush=True)
    time.sleep(600)
"""


def test_a_claimed_batch_is_put_aside_and_freed_when_its_holder_dies(tmp_path, capfd):
    from memorybench.run.cache import GenerationCache, GenerationKey

    cache = GenerationCache(tmp_path)
    keys = [GenerationKey("w", "none", "c", p, 0, "ddim", 2, 7.5, 64, 64, "float32") for p in ("a", "b")]
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_CLAIM, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with cache.claim(keys, wait=False) as mine:
            assert not mine  # another process makes this batch
        with cache.claim(keys[:1], wait=False) as mine:
            assert mine  # another batch is free
        holder.send_signal(signal.SIGKILL)
        with cache.claim(keys, wait=True) as mine:  # the dead holder's claim is released
            assert mine
            with cache.claim(keys, wait=False) as again:
                assert not again  # held while the block runs
    finally:
        holder.kill()
        holder.wait()
    with cache.claim(keys, wait=False) as mine:
        assert mine


# -- destinations, checked before any model loads -------------------------------------------
@pytest.fixture
def no_model(monkeypatch):
    import memorybench.run.runner as runner

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the destinations were checked")

    monkeypatch.setattr(runner, "load_model", refuse)


def _a_file(folder):
    (folder / "file.txt").write_text("x")
    return folder / "file.txt"


@pytest.mark.parametrize("make, option, reason", [
    (_a_file, "--output-dir", "is an existing file, not a folder"),
    (lambda t: _a_file(t) / "r.json", "--output", "is a file, so the folder"),
    (lambda t: t, "--output", "is an existing folder, not a file"),
    (lambda t: Path("/proc/memorybench-test/r.json"), "--output", "cannot be written"),
    (_a_file, "--cache-dir", "is an existing file, not a folder"),
])
def test_bad_destinations_fail_before_the_model_loads(tmp_path, capsys, no_model, make, option, reason):
    target = make(tmp_path)
    argv = ["run", "--suite", "smoke-v1", "--method", "none", option, str(target)]
    if option == "--cache-dir":
        argv += ["--output", str(tmp_path / "r.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and reason in err and option in err


def test_an_unwritable_output_folder_fails_before_the_model_loads(tmp_path, capsys, no_model, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    real_mkstemp = tempfile.mkstemp

    def refusing_mkstemp(*args, dir=None, **kwargs):  # root ignores the mode bits: refuse as the kernel would
        if dir is not None and Path(dir) == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", refusing_mkstemp)
    try:
        assert main(["run", "--suite", "smoke-v1", "--method", "none", "--output", str(locked / "r.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "cannot be written" in err and "Permission denied" in err
    finally:
        locked.chmod(0o700)


@pytest.mark.parametrize("value", ["0", "-3"])
def test_batch_size_must_be_positive(tmp_path, capsys, no_model, value):
    assert main(["run", "--suite", "smoke-v1", "--method", "none", "--output", str(tmp_path / "r.json"),
                 "--batch-size", value]) == 2
    assert f"--batch-size must be a positive integer, got {value}" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["0", "-3"])
def test_detect_batch_size_must_be_positive(tmp_path, capsys, no_model, value):
    assert main(["detect", "--suite", "smoke-v1", "--detector", "wen-magnitude", "--output",
                 str(tmp_path / "d.json"), "--batch-size", value]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: --batch-size must be a positive integer, got {value}"
    assert not (tmp_path / "d.json").exists()


@pytest.mark.parametrize("method, key", [("gni", "noise_scale"), ("scheduled-guidance", "early_guidance"),
                                         ("attn-rescale", "c1")])
@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_set_values_are_refused_naming_the_key(tmp_path, capsys, no_model, method, key, token):
    assert main(["run", "--suite", "smoke-v1", "--method", method, "--set", f"{key}={token}",
                 "--output", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{key}: must be a finite number" in err


def test_no_builtin_count_or_weight_takes_a_negative_value():
    """Negative counts, step sizes, weights and thresholds of norms cannot run (or loop for
    ever): every built-in config refuses them when it is built. Seeds and seed offsets may be
    negative (torch's generator takes any 64-bit integer), and so may apply_cfg_step (-1 is
    init-noise-adjust's "never"), guidance scales (opposite guidance is negative), NeMo's
    scaling of the found neurons, and thresholds on a cosine or an SSIM."""
    import dataclasses
    import typing

    from memorybench.api.detector import DETECTORS
    from memorybench.api.method import METHODS
    from memorybench.core.config import config_from_dict
    from memorybench.errors import ConfigError

    may_be_negative = {"apply_cfg_step", "candidate_offset", "scaling",
                       "similarity", "ssim_threshold"}  # cosine and SSIM lie in [-1, 1]
    accepted = []
    for registry in (METHODS, DETECTORS):
        for name in registry.builtin_names():
            config = registry.get(name).Config
            hints = typing.get_type_hints(config)
            for f in dataclasses.fields(config):
                if (hints[f.name] not in (int, float) or "seed" in f.name or "guidance" in f.name
                        or f.name in may_be_negative):
                    continue
                try:
                    config_from_dict(config, {f.name: -1})
                    accepted.append(f"{name}.{f.name}")
                except ConfigError:
                    pass
    assert accepted == []


@pytest.mark.parametrize("argv, reason", [
    (["--steps", "100000000"], "steps must be in [1, 1000]"),
    (["--set", "rho=1e30", "--method", "init-noise-adjust"], None),
])
def test_values_too_large_for_the_sampler_are_one_line_and_cache_nothing(tmp_path, capsys, argv, reason):
    """A value that passes the config's checks but overflows in generation (rho=1e30 turns the
    latents into NaN, which would decode to black images scoring as "no copy") ends the run
    with one line naming the method and its config; nothing is cached, no result is written."""
    cache, out = tmp_path / "cache", tmp_path / "r.json"
    args = ["run", "--suite", "smoke-v1", "--method", "none", "--cache-dir", str(cache), "--output", str(out),
            "--no-progress", "--steps", "2", *argv]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    if reason:
        assert reason in err
    else:
        assert err.startswith("error: method 'init-noise-adjust' with config {") and '"rho":1e+30' in err
        assert "generation gave NaN or Infinity in the latents of" in err and "nothing was cached" in err
    assert not out.exists() and not list(cache.rglob("*.png"))


# -- hostile plugins and suite files --------------------------------------------------------
def test_plugin_names_that_leave_a_folder_are_refused(tmp_path, capsys):
    from memorybench.api.registry import Registry
    from memorybench.errors import PluginError

    registry = Registry(kind="method", group="memorybench.test-none")
    for bad in ("../../x", "a/b", "a\\b", "..", "", ".hidden", "x" * 101):
        with pytest.raises(PluginError, match="is not allowed"):
            registry.register(bad, object())
    assert registry.names() == []
    plugin = tmp_path / "evil_plugin.py"
    plugin.write_text("from memorybench.api.method import Method, register_method\n\n"
                      "@register_method()\nclass Evil(Method):\n    name = '../../escaped'\n")
    assert main(["run", "--suite", "smoke-v1", "--method", "none", "--plugins", str(plugin),
                 "--output", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "method name '../../escaped' is not allowed" in err
    assert not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize("code", ["0", "1", "'bye'"])
def test_a_plugin_that_exits_while_importing_is_an_error(tmp_path, capsys, code):
    plugin = tmp_path / "exits.py"
    plugin.write_text(f"import sys\nsys.exit({code})\n")
    assert main(["list", "methods", "--plugins", str(plugin)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"it called sys.exit({code}) while being imported" in err


BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x]"]
                 + [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]) + "\n"


@pytest.mark.parametrize("text, reason", [
    (BOMB, "alias *a is not allowed in a suite file"),
    ("a: &a [*a]\n", "alias *a is not allowed"),
    ("name: !!python/object/apply:os.system ['echo pwned']\n", "could not determine a constructor for the tag"),
    ("name: x\n  bad: [\n", "is not a valid suite file at line"),
    ("[" * 100_000 + "]" * 100_000 + "\n", "suite file"),
    ("name: " + "x" * (2 * 1024 * 1024) + "\n", "larger than 1024 KiB"),
])
def test_hostile_suite_files_are_one_line_exit_2(tmp_path, capsys, no_model, text, reason):
    assert len(BOMB) < 400
    suite = tmp_path / "suite.yaml"
    suite.write_text(text)
    start = time.monotonic()
    assert main(["run", "--suite", str(suite), "--method", "none", "--output", str(tmp_path / "r.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and reason in err and time.monotonic() - start < 20


# -- inputs that must be caught up front ----------------------------------------------------
def test_a_text_file_named_png_in_the_ground_truth_folder_fails_up_front(tmp_path):
    import numpy as np
    from PIL import Image

    from memorybench.errors import DataError
    from memorybench.realdata.gt_images import GroundTruthFolder

    root = tmp_path / "gt_images"
    (root / "11").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "11" / "0.png")
    (root / "22.png").write_text("this is a text file")
    gt = GroundTruthFolder(root)
    assert len(gt.sha256([11])) == 64
    with pytest.raises(DataError, match=r"22\.png' in the gt_images folder is not an image"):
        gt.sha256([11, 22])


def test_fid_protocol_records_no_local_paths(tmp_path):
    import numpy as np
    import torch
    from PIL import Image

    from memorybench.metrics.fid import ImageFolder, fid_kid, tinyclip_extractor
    from memorybench.tinyworld.clip import build_tiny_clip

    torch.manual_seed(0)
    extractor = tinyclip_extractor(model=build_tiny_clip(vocab_size=64, context_length=8).eval())
    folder = tmp_path / "private" / "coco"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    gen = rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    cache = tmp_path / "private" / "cache"
    for cached in (False, True):  # computed, then read from the cache (which knows its file)
        out = fid_kid(gen, ImageFolder(folder, resolution=64), extractor, kid=False, cache_dir=cache)
        assert out["fid_gen"].protocol["reference"]["cached"] is cached
        text = json.dumps(out["fid_gen"].protocol)
        assert str(tmp_path) not in text and "private" not in text
        assert out["fid_gen"].protocol["reference"]["image_set"]["source"] == "coco"


def _fake_training_run(folder):
    from memorybench.tinyworld.train import world_file_hashes

    for rel in ("pipeline/unet/w.bin", "clip/model.bin"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(os.urandom(256 * 1024))
    (folder / "train_log.jsonl").write_text("{}\n")
    manifest = {"files": world_file_hashes(folder), "steps": {"vae": 1, "unet": 1, "clip": 1},
                "wall_time_s": {"vae_s": 1.0, "unet_s": 1.0, "clip_s": 1.0}}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return manifest


def _install(run, target, barrier):
    from memorybench.tinyworld.install import install_world

    barrier.wait()
    install_world(run, target)


def test_parallel_world_installs_take_turns(tmp_path):
    import hashlib
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    runs = [tmp_path / f"run{i}" for i in range(2)]
    manifests = [_fake_training_run(r) for r in runs]
    for attempt in range(5):
        target = tmp_path / f"world{attempt}"
        barrier = ctx.Barrier(2)
        procs = [ctx.Process(target=_install, args=(r, target, barrier)) for r in runs]
        for p in procs:
            p.start()
        for p in procs:
            p.join(120)
        assert [p.exitcode for p in procs] == [0, 0]
        installed = json.loads((target / "manifest.json").read_text())["files"]
        assert installed in [m["files"] for m in manifests]  # one whole world, not a mix of two
        for rel, digest in installed.items():
            assert hashlib.sha256((target / rel).read_bytes()).hexdigest() == digest
        assert not list(target.glob(".*.installing"))


_PAUSE_AT = {
    # the metric of smoke-v1 starts, then waits to be killed
    "metrics": """
from memorybench.api.metric import METRICS
cls = METRICS.get("pixel-diversity")
def compute(self, view):
    marker.write_text("metrics"); time.sleep(600)
cls.compute = compute
""",
    # the result's bytes are written and flushed to a temporary file; the rename has not happened
    "result write": """
import os
real_replace = os.replace
def replace(src, dst, *a, **kw):
    if str(dst) == output:
        marker.write_text("write"); time.sleep(600)
    return real_replace(src, dst, *a, **kw)
os.replace = replace
""",
}


@pytest.mark.slow
@pytest.mark.parametrize("moment", sorted(_PAUSE_AT))
def test_kill_9_during_metrics_or_the_result_write_then_rerun(clean, tmp_path, moment):
    cache, _ = _copy(clean, tmp_path)
    out, marker = tmp_path / "r.json", tmp_path / "marker"
    script = (f"import sys, time\nfrom pathlib import Path\nmarker = Path({str(marker)!r})\noutput = {str(out)!r}\n"
              + _PAUSE_AT[moment] + f"\nfrom memorybench.cli import main\nsys.exit(main({_argv(cache, out)!r}))\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not out.exists()  # no result, and never half of one
    assert main(_argv(cache, out)) == 0
    result = json.loads(out.read_text())
    assert result["cost"]["images_generated"] == 0 and result["summary"] == clean["summary"]
    assert _all_intact(cache)


@pytest.mark.slow  # three killed runs and their reruns in subprocesses: about a minute
def test_kill_9_at_random_moments_loses_nothing():
    """benchmarks/kill_anywhere.py: kill -9 at a random moment of a run (loading, generating,
    scoring or writing), rerun, and require the clean summary, an intact cache and no image of
    the cache made twice; its longer runs are on the reliability page."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "kill_anywhere.py"
    done = subprocess.run([sys.executable, str(script), "--trials", "3", "--seed", "1", "--steps", "2"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.strip().endswith("3 of 3 trials held")
