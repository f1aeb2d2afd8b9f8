"""Kill a run with SIGKILL at a random moment, rerun it, and check that nothing was lost.

Each trial starts ``memorybench run`` on the smoke suite with an empty cache, kills it
(``kill -9``) at a random moment, then runs the same command again. ``--at uniform`` (the
default) kills after a random share of a clean run's wall time, so model loading,
generation, metrics and the result write all get hit; ``--at images`` waits until a random
number of images are in the cache and kills within the next few milliseconds, aiming at the
writes of the cache. A trial holds
when the rerun exits 0 with the clean run's summary, value for value; every cached image
matches the hash kept beside it; no temporary file is left; and the rerun generates only the
images the killed run had not cached. Prints one row per trial and the count that held.

    python benchmarks/kill_anywhere.py --trials 20 --seed 0
    python benchmarks/kill_anywhere.py --trials 30 --seed 2 --at images
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memorybench.core.io import read_checked


def command(cache: Path, out: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "memorybench.cli", "run", "--suite", "smoke-v1", "--method", "none",
            "--cache-dir", str(cache), "--output", str(out), "--no-progress", "--steps", str(steps),
            "--batch-size", "2"]


def intact_images(cache: Path) -> int:
    """Cached images whose bytes match the hash beside them (a damaged one would be removed)."""
    return sum(read_checked(p, "image") is not None for p in (cache / "images").rglob("*.png"))


def wait_for_images(cache: Path, count: int, proc: subprocess.Popen) -> None:
    """Until ``count`` images are in the cache's manifest (or the run ended)."""
    manifest = cache / "manifest.jsonl"
    while proc.poll() is None:
        if count == 0 or (manifest.exists() and len(manifest.read_bytes().splitlines()) >= count):
            return
        time.sleep(0.002)


def whole_result(path: Path, summary: dict) -> bool:
    """No result file, or a whole one with the clean summary (never half of one)."""
    if not path.exists():
        return True
    try:
        return json.loads(path.read_text())["summary"] == summary
    except (ValueError, KeyError):
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--steps", type=int, default=4, help="sampler steps of the smoke run")
    ap.add_argument("--at", choices=("uniform", "images"), default="uniform",
                    help="kill at a uniform moment of the run, or just after a random number of cached images")
    ap.add_argument("--within-ms", type=float, default=20.0,
                    help="--at images: kill within this many milliseconds of the k-th image")
    ap.add_argument("--out", type=Path, help="write the trials as JSON here")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        subprocess.run(command(root / "clean-cache", root / "clean.json", args.steps), check=True,
                       capture_output=True)
        wall = time.perf_counter() - t0
        clean = json.loads((root / "clean.json").read_text())
        total = clean["cost"]["images_generated"]
        print(f"clean run: {wall:.1f} s, {total} images; killing each trial "
              + (f"at a uniform moment in [0, {wall:.1f}] s" if args.at == "uniform"
                 else f"within {args.within_ms:g} ms of the k-th cached image, k uniform in [0, {total - 1}]"))
        rows = []
        for trial in range(args.trials):
            cache, killed, resumed = root / f"cache{trial}", root / f"killed{trial}.json", root / f"resumed{trial}.json"
            started = time.perf_counter()
            proc = subprocess.Popen(command(cache, killed, args.steps), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            if args.at == "uniform":
                time.sleep(rng.uniform(0, wall))
            else:
                wait_for_images(cache, rng.randrange(total), proc)
                time.sleep(rng.uniform(0, args.within_ms / 1000))
            at = time.perf_counter() - started
            finished_first = proc.poll() is not None
            proc.kill()
            proc.wait()
            torn = len(list(cache.rglob("*.tmp"))) if cache.exists() else 0  # writes the kill interrupted
            kept = intact_images(cache) if cache.exists() else 0
            rerun = subprocess.run(command(cache, resumed, args.steps), capture_output=True, text=True)
            result = json.loads(resumed.read_text()) if resumed.exists() else None
            checks = {
                "rerun exit 0": rerun.returncode == 0,
                "same summary": result is not None and result["summary"] == clean["summary"],
                "cache intact": intact_images(cache) == total and not list(cache.rglob("*.tmp")),
                "only the rest made": result is not None and result["cost"]["images_generated"] == total - kept,
                "no torn result": whole_result(killed, clean["summary"]),
            }
            held = all(checks.values())
            phase = ("finished" if finished_first or killed.exists() else "before the first image" if kept == 0
                     else "generating" if kept < total else "scoring or writing")
            rows.append({"trial": trial, "killed_at_s": round(at, 2), "phase": phase, "images_kept": kept,
                         "writes_interrupted": torn, "held": held, "checks": checks})
            failed = ", ".join(k for k, ok in checks.items() if not ok)
            print(f"trial {trial:2d}: kill at {at:5.1f} s ({phase}), {kept:2d}/{total} images kept, "
                  f"{torn} write(s) interrupted -> "
                  f"{'held' if held else 'FAILED: ' + failed}", flush=True)
        n_held = sum(r["held"] for r in rows)
        phases = {p: sum(r["phase"] == p for r in rows) for p in dict.fromkeys(r["phase"] for r in rows)}
        print("kills by phase: " + ", ".join(f"{p} {n}" for p, n in phases.items())
              + f"; kills that interrupted a write: {sum(r['writes_interrupted'] > 0 for r in rows)}")
        print(f"{n_held} of {len(rows)} trials held")
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"clean_wall_s": wall, "images": total, "trials": rows, "at": args.at,
                                            "seed": args.seed, "steps": args.steps}, indent=1) + "\n")
    return 0 if n_held == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
