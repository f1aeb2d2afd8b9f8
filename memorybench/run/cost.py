"""What a method costs against no mitigation, measured in the same process.

Seconds per image from the cache manifest depend on when and where each image was made
(another day, another machine, a busy neighbour), so they cannot be compared across
methods. The runner therefore also times one identical small batch (the first evaluation
prompts of the suite's first prompt set x its first seed) with the method applied and,
right after, with ``none``, both uncached on the same loaded pipeline; the ratio of the two
is the number to compare. The timed batch is recorded with the figures.

Peak memory: CUDA's allocator peak on GPU; on CPU the process's peak resident set
(``VmHWM``), which Linux lets a process reset (``/proc/self/clear_refs``), so each run and
each timed batch gets its own peak even when several methods run in one process.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import torch

if TYPE_CHECKING:
    from memorybench.api.method import Method
    from memorybench.model.pipeline import PipelineAdapter, SamplerSettings
    from memorybench.suites.data import SuiteData

PROBE_PROMPTS = 4  # prompts in the timed batch (x 1 seed)
PROBE_REPEATS = 3  # timings per side; the fastest counts (the least disturbed by other load)


# -- peak memory ------------------------------------------------------------------------
def _current_peak_mb(device: str) -> float:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; never reset


def _reset_peak(device: str) -> None:
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size
    except OSError:
        pass  # not Linux, or not allowed: the peak then covers the whole process


class PeakMemory:
    """Peak memory of a whole run that survives the resets made to measure one batch."""

    def __init__(self) -> None:
        self.device = "cpu"
        self._before = 0.0  # peak of the run before the latest reset

    def start(self, device: str) -> None:
        self.device, self._before = device, 0.0
        _reset_peak(device)

    @contextlib.contextmanager
    def section(self) -> Iterator[dict[str, float]]:
        """Measure the peak of a block; the run's peak still includes it."""
        self._before = max(self._before, _current_peak_mb(self.device))
        _reset_peak(self.device)
        out: dict[str, float] = {}
        yield out
        out["peak_memory_mb"] = _current_peak_mb(self.device)

    def run_peak_mb(self) -> float:
        return max(self._before, _current_peak_mb(self.device))


RUN_PEAK = PeakMemory()  # one process runs one method at a time


# -- the timed batch ----------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeBatch:
    prompt_set: str
    prompts: tuple[str, ...]
    seed: int

    def describe(self, settings: "SamplerSettings", repeats: int) -> dict[str, Any]:
        return {"prompt_set": self.prompt_set, "prompts": len(self.prompts), "seed": self.seed,
                "images": len(self.prompts), "steps": settings.steps, "sampler": settings.sampler,
                "resolution": [settings.height, settings.width], "repeats": repeats,
                "statistic": "fastest of the repeats, seconds per image",
                "order": "method first (still applied after generation), then none"}


def probe_batch(data: "SuiteData", n_prompts: int = PROBE_PROMPTS) -> ProbeBatch | None:
    """The suite's first evaluation prompts x its first seed: the same batch for every method."""
    set_name = next((name for name, prompts in data.prompts.items() if prompts and data.seeds.get(name)), None)
    if set_name is None:
        return None
    return ProbeBatch(set_name, tuple(data.prompts[set_name][:n_prompts]), int(data.seeds[set_name][0]))


def time_batch(pipe: "PipelineAdapter", batch: ProbeBatch, settings: "SamplerSettings",
               method: "Method | None", repeats: int = PROBE_REPEATS) -> dict[str, Any]:
    """Generate ``batch`` uncached ``repeats`` times; seconds per image and peak memory."""
    cuda = str(pipe.device).startswith("cuda")
    runs = []
    with RUN_PEAK.section() as mem:
        for _ in range(repeats):
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            pipe.generate(list(batch.prompts), [batch.seed] * len(batch.prompts), settings, method=method)
            if cuda:
                torch.cuda.synchronize()
            runs.append((time.perf_counter() - t0) / len(batch.prompts))
    return {"seconds_per_image": min(runs), "seconds_per_image_runs": runs, "peak_memory_mb": mem["peak_memory_mb"]}


def versus_none(pipe: "PipelineAdapter", batch: ProbeBatch, settings: "SamplerSettings",
                method_timing: dict[str, Any], repeats: int = PROBE_REPEATS) -> dict[str, Any]:
    """Time the same batch with ``none`` (call right after ``method_timing``, the method removed)."""
    from memorybench.api.method import METHODS

    none_timing = time_batch(pipe, batch, settings, METHODS.get("none")(), repeats)
    return {
        "batch": batch.describe(settings, repeats),
        "method": method_timing,
        "none": none_timing,
        "seconds_per_image_ratio": method_timing["seconds_per_image"] / none_timing["seconds_per_image"],
        "peak_memory_ratio": method_timing["peak_memory_mb"] / none_timing["peak_memory_mb"],
        "measured_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def probe_file(cache_root: Path, pipe: "PipelineAdapter", method: "Method", suite_sha256: str) -> Path:
    """Where a measurement is kept, so a rerun served from the cache reports it again."""
    return (Path(cache_root) / "cost" /
            f"{pipe.weights_sha256[:16]}-{method.name}-{method.config_sha256()[:16]}-{suite_sha256[:16]}-"
            f"{str(pipe.device).replace(':', '')}.json")


def save(path: Path, measurement: dict[str, Any]) -> None:
    from memorybench.core.io import atomic_write_text

    atomic_write_text(path, json.dumps(measurement, allow_nan=False))


def load(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
