"""The wheel is the project as a user installs it: every package, every data file, and a
working CLI, checked from a fresh folder that cannot see this source tree."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# source folder -> the package name it installs as
SOURCE_PACKAGES = {"memorybench": "memorybench", "methods": "memorybench.methods", "datasets": "memorybench.datasets"}


def source_packages() -> set[str]:
    """Every folder of the source tree that holds Python files, by installed package name."""
    found = set()
    for folder, package in SOURCE_PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.parent.relative_to(ROOT / folder).parts
            if "__pycache__" not in parts:
                found.add(".".join([package, *parts]))
    return found


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = out.glob("memorybench-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, timeout=600)
    return target


def run_installed(installed: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """Python with only the installed wheel on the path for memorybench (run from ``cwd``)."""
    env = {"PYTHONPATH": str(installed), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def test_every_package_folder_is_in_the_wheel(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    in_wheel = {str(Path(n).parent).replace("/", ".") for n in names if n.endswith("/__init__.py") or n.endswith(".py")}
    missing = sorted(source_packages() - in_wheel)
    assert not missing, f"package folders left out of the wheel: {missing}"
    assert any(n.startswith("memorybench/suites/") and n.endswith(".yaml") for n in names)
    assert "memorybench/datasets/tinyworld/world/pipeline/unet/diffusion_pytorch_model.safetensors" in names


def test_installed_wheel_lists_suites_and_imports_every_module(installed, tmp_path):
    where = run_installed(installed, tmp_path, "-c", "import memorybench; print(memorybench.__file__)")
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(installed)), "the source tree shadowed the installed wheel"
    listed = run_installed(installed, tmp_path, "-m", "memorybench.cli", "list", "suites")
    assert listed.returncode == 0, listed.stderr
    assert {"tinyworld-v1", "sd-webster500-v1", "finetune-dup-v1"} <= {line.split("\t")[0] for line in listed.stdout.splitlines()}
    every = ("import importlib, pkgutil, memorybench\n"
             "names = [m.name for m in pkgutil.walk_packages(memorybench.__path__, 'memorybench.')]\n"
             "for n in names: importlib.import_module(n)\n"
             "print(len(names))")
    imported = run_installed(installed, tmp_path, "-c", every)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert int(imported.stdout.strip()) >= len(source_packages())


@pytest.mark.slow
def test_installed_wheel_runs_the_real_path_on_a_random_sd_folder(installed, tmp_path):
    """From the wheel alone: write a random-weights SD 2.1 folder, run a method and a detector on it."""
    made = run_installed(installed, tmp_path, "-m", "memorybench.cli", "random-model", "sd21", "--out", str(tmp_path / "sd21"))
    assert made.returncode == 0, made.stderr[-3000:]
    smoke = ["--model", str(tmp_path / "sd21"), "--steps", "2", "--resolution", "64", "--seeds", "2",
             "--limit-prompts", "2", "--no-progress"]
    ran = run_installed(installed, tmp_path, "-m", "memorybench.cli", "run", "--suite", "smoke-v1", "--method", "rta",
                        "--cache-dir", str(tmp_path / "cache"), "--output", str(tmp_path / "r.json"), *smoke)
    assert ran.returncode == 0, ran.stderr[-3000:]
    detected = run_installed(installed, tmp_path, "-m", "memorybench.cli", "detect", "--suite", "smoke-v1",
                             "--detector", "wen-magnitude", "--output", str(tmp_path / "d.json"), *smoke)
    assert detected.returncode == 0, detected.stderr[-3000:]
