"""Install a finished ``memorybench tinyworld train`` run as the shipped tiny world.

Shipping a world changes every number measured on it, so this only swaps the files, checked
against the run's own manifest; what must be re-measured afterwards is printed by the CLI
(``memorybench tinyworld install``) and listed on the docs page "The tiny world".
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from memorybench.errors import ConfigError
from memorybench.core.hashing import sha256_file
from memorybench.core.io import atomic_write_text, file_lock, read_json_strict
from memorybench.tinyworld.train import WORLD_PART_PREFIXES, WORLD_PARTS, world_file_hashes


def check_trained_run(run_dir: Path) -> dict[str, Any]:
    """The run's manifest, once every file it lists is present and unchanged since training."""
    manifest_path = run_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(f"'{run_dir}' holds no manifest.json: pass the --out folder of a finished "
                          "`memorybench tinyworld train` run")
    manifest = read_json_strict(manifest_path, "training run manifest")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files", {}), dict):
        raise ConfigError(f"'{manifest_path}' is not a tiny-world training manifest")
    missing = [rel for rel in manifest.get("files", {}) if not (run_dir / rel).is_file()]
    changed = [rel for rel, digest in manifest.get("files", {}).items()
               if rel not in missing and sha256_file(run_dir / rel) != digest]
    if missing or changed or not manifest.get("files"):
        raise ConfigError(f"'{run_dir}' does not match its manifest (missing: {', '.join(missing) or 'none'}; "
                          f"changed since training: {', '.join(changed) or 'none'})")
    return manifest


def weight_files_differing(manifest: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """Files of the world's folders (``pipeline/``, ``clip/``) whose sha256 differs between two
    manifests, or that only one lists. The loss log is left out: it records wall-clock times."""
    ours = {rel: d for rel, d in manifest.get("files", {}).items() if rel.startswith(WORLD_PART_PREFIXES)}
    theirs = {rel: d for rel, d in other.get("files", {}).items() if rel.startswith(WORLD_PART_PREFIXES)}
    return sorted(rel for rel in ours.keys() | theirs.keys() if ours.get(rel) != theirs.get(rel))


def shipped_weights_verdict(run_dir: Path, target: Path) -> str | None:
    """For a finished run of the same recipe as the world in ``target``: whether its weights are
    that world's, as one line; None when the recipes differ (or ``target`` holds no world)."""
    from memorybench.tinyworld.model import TinyWorldConfig

    if not (target / "manifest.json").is_file():
        return None
    shipped = json.loads((target / "manifest.json").read_text())
    run = json.loads((run_dir / "manifest.json").read_text())
    if TinyWorldConfig.from_dict(shipped["config"]) != TinyWorldConfig.from_dict(run["config"]):
        return None
    differing = weight_files_differing(run, shipped)
    n = sum(rel.startswith(WORLD_PART_PREFIXES) for rel in run["files"])
    return "same recipe as the shipped world; weights " + (
        "identical to it (sha256 of every file)" if not differing else
        f"differ from it in {len(differing)} of {n} files (other hardware, thread count or torch "
        "version round differently; compare the measured figures instead)")


def install_world(run_dir: str | Path, target: str | Path) -> dict[str, Any]:
    """Copy the run's ``pipeline/``, ``clip/`` and loss log into ``target`` and write its
    manifest (the run's, plus each phase's wall time and the installed files' sha256).
    The run's measured figures do not carry over: ``measured_eval`` is left out until the
    new world is measured."""
    run_dir, target = Path(run_dir), Path(target)
    manifest = check_trained_run(run_dir)
    target.mkdir(parents=True, exist_ok=True)
    with file_lock(target / "manifest.json"):  # two installs into one folder take turns
        return _install_locked(run_dir, target, manifest)


def _install_locked(run_dir: Path, target: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    for name in WORLD_PARTS:  # copy beside the old part first, so a failed copy leaves it intact
        staging = target / f".{name}.installing"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(run_dir / name, staging)
        shutil.rmtree(target / name, ignore_errors=True)
        os.replace(staging, target / name)
    shutil.copy2(run_dir / "train_log.jsonl", target / "train_log.jsonl")
    wall = manifest.get("wall_time_s", {})
    manifest["phases"] = {
        phase: {"hardware": manifest.get("hardware"), "steps": manifest["steps"][phase], "wall_s": wall.get(f"{phase}_s"),
                "note": "trained from scratch in one `memorybench tinyworld train` run"}
        for phase in ("vae", "unet", "clip")
    }
    manifest["files"] = world_file_hashes(target)
    manifest.pop("measured_eval", None)
    atomic_write_text(target / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest
