"""The CLI as a new user meets it: listings, one-line errors, scaffold -> install -> validate -> run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from memorybench.cli import main

BIN = Path(sys.executable).parent / "memorybench"


def _cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_methods_shows_none_first_column(capsys):
    code, out, _ = _cli(capsys, "list", "methods")
    assert code == 0
    rows = [line.split("\t") for line in out.splitlines()]
    assert ["none", "inference"] == rows[[r[0] for r in rows].index("none")][:2]


def test_list_suites_and_metrics(capsys):
    code, out, _ = _cli(capsys, "list", "suites")
    assert code == 0 and out.startswith("smoke-v1\tv1\t") or "smoke-v1\tv1" in out
    code, out, _ = _cli(capsys, "list", "metrics")
    assert code == 0 and "pixel-diversity\t" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["run", "--suite", "smoke-v1", "--method", "nonee"], "unknown method 'nonee'. Did you mean 'none'?"),
        (["run", "--suite", "smoke-v2", "--method", "none"], "unknown suite 'smoke-v2'. Did you mean 'smoke-v1'?"),
        (["run", "--suite", "smoke-v1", "--method", "none", "--set", "strength=2"],
         "method 'none': unknown key 'strength'. It takes no settings."),
        (["run", "--suite", "smoke-v1", "--method", "none", "--model", "/nonexistent/sd15"],
         "model folder '/nonexistent/sd15' does not exist"),
        (["validate", "none", "--plugins", "/nonexistent/plugin.py"], "plugin file '/nonexistent/plugin.py' does not exist"),
        (["tinyworld", "train", "--out", "OUT", "--set", "unet_stepz=1"],
         "tiny-world config: unknown key 'unet_stepz'. Did you mean 'unet_steps'?"),
        (["tinyworld", "train", "--out", "OUT", "--set", "prediction_type=sample"],
         "prediction_type must be one of ('epsilon', 'v_prediction'), got 'sample'"),
    ],
)
def test_bad_input_gives_one_clear_line(capsys, argv, message, tmp_path):
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    code, out, err = _cli(capsys, *argv, *(["--cache-dir", str(tmp_path)] if argv[0] == "run" else []))
    assert code == 2
    assert not (tmp_path / "out").exists()  # nothing written for a refused command
    assert err.strip().count("\n") == 0 and err.startswith("error: ")
    assert message in err, err


@pytest.mark.parametrize("argv", [
    ["run", "--suite", "smoke-v1", "--method", "none"],
    ["detect", "--suite", "tinyworld-v1", "--detector", "wen-magnitude"],
    ["analyze", "wanda-masks", "--suite", "tinyworld-v1", "--out", "OUT"],
    ["tinyworld", "train", "--out", "OUT"],
])
def test_device_option_refuses_unknown_and_absent_devices(capsys, argv, tmp_path):
    """A device torch does not see is a usage error before any model loads, on every command."""
    import torch

    from memorybench.cli import device_arg

    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    absent = f"cuda:{torch.cuda.device_count() if torch.cuda.is_available() else 0}"
    for device, message in (("gpu", "'gpu' is not a device: use cpu, cuda or cuda:N"),
                            (absent, f"'{absent}': torch {torch.__version__} sees")):
        with pytest.raises(SystemExit) as exc:
            main([*argv, "--device", device])
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert device_arg("cpu") == "cpu"


def test_broken_plugin_file_is_named_with_its_error(capsys, tmp_path):
    plugin = tmp_path / "my_method.py"
    plugin.write_text("from memorybench import Method\nclass X(Method):\n    name = 'x'\nundefined_name\n")
    code, _, err = _cli(capsys, "list", "methods", "--plugins", str(plugin))
    assert code == 2 and "my_method.py" in err and "NameError" in err and err.count("\n") == 1


def test_misspelt_config_key_in_scaffolded_style_method(capsys, tmp_path):
    plugin = tmp_path / "cfg_method.py"
    plugin.write_text(
        "from dataclasses import dataclass\nfrom memorybench import Method, register_method\n"
        "@dataclass\nclass C:\n    early_steps: int = 5\n"
        "@register_method()\nclass M(Method):\n    name = 'cfg-method-test'\n    Config = C\n")
    code, _, err = _cli(capsys, "validate", "cfg-method-test", "--set", "early_step=3", "--plugins", str(plugin))
    assert code == 2 and "unknown key 'early_step'. Did you mean 'early_steps'?" in err


def test_debug_flag_shows_traceback():
    proc = subprocess.run([str(BIN), "--debug", "run", "--suite", "smoke-v1", "--method", "nonee"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_scaffold_install_validate_run(tmp_path):
    plugin_dir, site = tmp_path / "demo", tmp_path / "site"
    subprocess.run([str(BIN), "new-method", "demo-method", "--dir", str(plugin_dir)], check=True, timeout=300)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(plugin_dir)], check=True, timeout=300)
    env = {**os.environ, "PYTHONPATH": str(site)}
    listed = subprocess.run([str(BIN), "list", "methods"], env=env, capture_output=True, text=True, timeout=300)
    assert "demo-method\tinference" in listed.stdout and "entry-point:memorybench-demo-method" in listed.stdout
    valid = subprocess.run([str(BIN), "validate", "demo-method"], env=env, capture_output=True, text=True, timeout=300)
    assert valid.returncode == 0 and "is valid" in valid.stdout, valid.stdout + valid.stderr
    out = tmp_path / "demo.json"
    ran = subprocess.run([str(BIN), "run", "--suite", "smoke-v1", "--method", "demo-method", "--set", "early_steps=3",
                          "--output", str(out), "--cache-dir", str(tmp_path / "cache"), "--no-progress"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    result = json.loads(out.read_text())
    assert result["method"]["config"] == {"early_guidance": 1.0, "early_steps": 3}
    assert result["method"]["source"] == "entry-point:memorybench-demo-method"
    # the scaffold's own tests pass too
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(plugin_dir / "tests")],
                           env=env, capture_output=True, text=True, timeout=600, cwd=plugin_dir)
    assert tests.returncode == 0, tests.stdout[-2000:]
