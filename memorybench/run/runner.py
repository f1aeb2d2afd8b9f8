"""The runner: generate through the cache, evaluate, write the result JSON.

Order of work: resolve the method and its config (fail fast on bad input), load the
model, work out every (prompt, seed) image and which are already cached, apply the method
only if something must be generated, generate in batches with a progress bar, remove the
method, then compute metrics from the images and write the result atomically.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sys
import time
import traceback
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from memorybench.run import cost, retrigger
from memorybench.core import provenance
from memorybench.results import thumbnails
from memorybench.run.cache import GenerationCache, GenerationKey, default_cache_dir
from memorybench.core.io import atomic_write_text
from memorybench.core.config import canonical_json
from memorybench.errors import ConfigError, MemorybenchError, NonFiniteOutputError
from memorybench.api.metric import RunView
from memorybench.run.finetune import suite_finetune
from memorybench.api.method import Method, MethodContext, apply_method
from memorybench.model.pipeline import PipelineAdapter
from memorybench.api.method import METHODS
from memorybench.api.metric import METRICS
from memorybench.results.record import write_result
from memorybench.results.schema import SCHEMA_VERSION
from memorybench.run.request import RunOptions, RunRequest
from memorybench.suites.smoke import smoke_of
from memorybench.suites.spec import Suite
from memorybench.suites.data import SuiteData, load_suite_data


def load_model(suite: Suite, options: RunOptions) -> PipelineAdapter:
    if options.model_path:
        return PipelineAdapter.from_folder(options.model_path, device=options.device, dtype=options.dtype)
    if suite.model == "dummy":
        return PipelineAdapter.dummy(seed=0, device=options.device)
    if suite.model == "tinyworld":
        from memorybench.tinyworld import world_path

        return PipelineAdapter.from_folder(world_path() / "pipeline", device=options.device,
                                           dtype=options.dtype, model_id="tinyworld-v1")
    raise ConfigError(f"suite '{suite.name}' needs a model folder: pass --model PATH")


class _Shard:
    """This process's share of generation: shard i of n takes every n-th missing image and
    all shards write to the shared cache.

    Two ways to have shards: a process group (``accelerate launch`` or ``torchrun``; gloo on
    CPU, nccl on GPU), where the shards wait for each other and the main process then
    computes the metrics; or ``--shard I/N``, independent processes (a Slurm array) that only
    generate, after which one ``--metrics-only`` run evaluates."""

    def __init__(self, independent: tuple[int, int] | None = None) -> None:
        self.state = None
        self.independent = independent
        if independent is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            self.state = PartialState()

    @property
    def index(self) -> int:
        if self.independent:
            return self.independent[0]
        return self.state.process_index if self.state else 0

    @property
    def count(self) -> int:
        if self.independent:
            return self.independent[1]
        return self.state.num_processes if self.state else 1

    @property
    def is_main(self) -> bool:
        """Whether this process computes the metrics (never an independent shard)."""
        return self.independent is None and self.index == 0

    def device(self, requested: str) -> str:
        """A bare ``cuda`` means this process's own GPU in a process group (local rank)."""
        if self.state is not None and requested == "cuda":
            return f"cuda:{self.state.local_process_index}"
        return requested

    def wait(self) -> None:
        if self.state:
            self.state.wait_for_everyone()

    def total(self, count: int) -> int:
        """The sum of ``count`` over the process group (this process's own count outside one)."""
        if not self.state:
            return count
        import torch
        import torch.distributed as dist

        summed = torch.tensor([count], dtype=torch.int64, device=self.state.device)
        dist.all_reduce(summed)
        return int(summed.item())


def generate_all(pipe: PipelineAdapter, suite: Suite, data: SuiteData, method: Method,
                 cache: GenerationCache, options: RunOptions, ctx: MethodContext,
                 shard: _Shard | None = None) -> dict[str, Any]:
    """Fill the cache with every image of the suite; return counts and timings."""
    s = suite.sampler
    dtype = pipe.dtype_name
    finetune = suite_finetune(pipe, suite, data, method, cache.root, options.progress)  # None unless the suite fine-tunes
    model_sha = finetune.model_sha256 if finetune else pipe.weights_sha256  # base weights (+ fine-tune recipe)
    jobs: list[tuple[str, str, int, GenerationKey]] = []
    for set_name, prompts in data.prompts.items():
        for prompt in prompts:
            for seed in data.seeds[set_name]:
                key = GenerationKey(model_sha, method.name, method.config_sha256(), prompt, seed,
                                    s.sampler, s.steps, float(s.guidance), s.height, s.width, dtype)
                jobs.append((set_name, prompt, seed, key))
    missing = [j for j in jobs if not cache.has(j[3])]
    if options.metrics_only and missing:
        raise ConfigError(f"--metrics-only: {len(missing)} of {len(jobs)} images of method '{method.name}' are not "
                          f"in the cache at {cache.root} yet; run the remaining shards (or drop --metrics-only)")
    shard = shard or _Shard()
    # shard i owns every n-th batch of the suite's fixed job list: shards started at any time (or
    # rerun) split the work the same way and fill only what is missing of their own, and on an
    # empty cache each batch is the one a single process would generate, so the images are too
    missing_ids = {id(j) for j in missing}
    bs = options.batch_size
    missing = [j for i, j in enumerate(jobs) if (i // bs) % shard.count == shard.index and id(j) in missing_ids]
    # each batch of the job list is claimed while it is made (see GenerationCache.claim): a batch
    # another run is making is put aside, then waited for, and only what is still missing is made
    own_batches = [jobs[b:b + bs] for b in range(0, len(jobs), bs)
                   if (b // bs) % shard.count == shard.index and any(id(j) in missing_ids for j in jobs[b:b + bs])]
    made_here = 0
    prep_file = cache.root / "prepare" / f"{model_sha[:16]}-{method.name}-{method.config_sha256()[:16]}.json"
    prep_seconds = None
    # cost against none, the same batch for every method; a smoke run's timing means nothing, so it has none
    probe = cost.probe_batch(data) if shard.is_main and not smoke_of(suite) else None
    cost_file = cost.probe_file(cache.root, pipe, method, suite.sha256())
    versus_none = None
    if missing:
        with (finetune.applied(method, ctx) if finetune else contextlib.nullcontext(0.0)) as finetune_seconds, \
                apply_method(method, pipe, ctx) as applied:
            prep_seconds = finetune_seconds + applied.prepare_seconds
            atomic_write_text(prep_file, json.dumps({"seconds": prep_seconds, "report": ctx.report}))
            bar = tqdm(total=len(missing), desc=f"generate [{method.name}]", unit="img",
                       disable=not options.progress, file=sys.stderr)

            def make(fixed: list, wait: bool) -> bool:
                """Make the missing images of one batch under its claim; False: claimed elsewhere."""
                nonlocal made_here
                with cache.claim([j[3] for j in fixed], wait) as mine:
                    if not mine:
                        return False
                    todo = [j for j in fixed if id(j) in missing_ids]
                    batch = [j for j in todo if not cache.has(j[3])]  # another run may have made some
                    if batch:
                        t0 = time.perf_counter()
                        try:
                            images = pipe.generate([j[1] for j in batch], [j[2] for j in batch], s, method=method)
                        except NonFiniteOutputError as exc:  # name what the user can change
                            raise NonFiniteOutputError(
                                f"method '{method.name}' with config {canonical_json(method.config_dict())}: "
                                f"{exc}") from None
                        per_image = (time.perf_counter() - t0) / len(batch)
                        for (set_name, _, _, key), image in zip(batch, images):
                            cache.store(key, image, per_image, prompt_set=set_name)
                        made_here += len(batch)
                    bar.update(len(todo))
                return True

            put_aside = [fixed for fixed in own_batches if not make(fixed, wait=False)]
            for fixed in put_aside:
                make(fixed, wait=True)
            bar.close()
            method_timing = cost.time_batch(pipe, probe, s, method) if probe else None
        if method_timing is not None:  # the method is removed now: the same batch with none
            versus_none = cost.versus_none(pipe, probe, s, method_timing)
            cost.save(cost_file, versus_none)
    elif prep_file.is_file():
        saved = json.loads(prep_file.read_text())
        prep_seconds, ctx.report = saved.get("seconds"), saved.get("report", {})
    if probe and versus_none is None:
        versus_none = cost.load(cost_file)
        if versus_none is None:  # nothing generated here and no earlier measurement: measure now
            probe_ctx = MethodContext(seed=ctx.seed, settings=ctx.settings,
                                      calibration_prompts=list(ctx.calibration_prompts))
            with apply_method(method, pipe, probe_ctx):
                method_timing = cost.time_batch(pipe, probe, s, method)
            versus_none = cost.versus_none(pipe, probe, s, method_timing)
            cost.save(cost_file, versus_none)
        else:
            versus_none["measured_in"] = "an earlier run of this method, weights and suite (this run was served from the cache)"
    if versus_none is not None:
        versus_none.setdefault("measured_in", "this run")
    shard.wait()  # every shard's images are in the cache from here on
    # what this run made, over all its processes; counting what was missing at the start would
    # also count images that a faster process of the group, or another run, made meanwhile
    made_by_run = shard.total(made_here)
    seconds = cache.seconds_by_digest()
    per_image = [seconds.get(j[3].digest()) for j in jobs]
    per_image = [x for x in per_image if x is not None]
    return {
        "jobs": jobs,
        "images_generated": made_by_run,
        "images_generated_here": made_here,
        "images_from_cache": len(jobs) - made_by_run,
        "seconds_per_image": float(np.mean(per_image)) if per_image else 0.0,
        "preparation_seconds": float(prep_seconds or 0.0),
        "vs_none": versus_none,
    }


def run(suite: Suite, method_name: str, settings: dict[str, Any] | None = None,
        options: RunOptions | None = None) -> dict[str, Any] | None:
    """Run one method on one suite; returns the result (None on non-main shards)."""
    options = options or RunOptions()
    wall0 = time.perf_counter()
    provenance.memorybench_commit()  # the source state now, before anything can change it
    method_cls = METHODS.get(method_name)
    method = method_cls.from_settings(settings or {})
    metric_objs = [METRICS.get(name)() for name in suite.metrics]  # fail fast on unknown names
    data = load_suite_data(suite, options.data_paths)
    shard = _Shard(options.shard)  # before the model loads: in a process group it picks the GPU
    options = replace(options, device=shard.device(options.device))
    pipe = load_model(suite, options)
    pipe.batch_invariant = options.batch_invariant
    cost.RUN_PEAK.start(options.device)
    cache = GenerationCache(options.cache_dir or default_cache_dir())
    ctx = MethodContext(seed=0, settings=suite.sampler, calibration_prompts=list(data.calibration_prompts))
    gen = generate_all(pipe, suite, data, method, cache, options, ctx, shard)
    if not shard.is_main:
        if shard.independent:
            print(f"shard {shard.index}/{shard.count} [{method.name}]: generated {gen['images_generated_here']} "
                  f"image(s) into {cache.root}; when every shard is done, evaluate with --metrics-only",
                  file=sys.stderr)
        return None

    images: dict[str, dict[str, list[np.ndarray]]] = {name: {} for name in data.prompts}
    for set_name, prompt, _, key in gen["jobs"]:
        images[set_name].setdefault(prompt, []).append(cache.load(key))
    view = RunView(suite=suite, data=data, pipe=pipe, cache_dir=cache.root, progress=options.progress,
                   images={k: {p: np.stack(v) for p, v in d.items()} for k, d in images.items()})
    metrics = {}
    for metric in tqdm(metric_objs, desc="metrics", disable=not options.progress, file=sys.stderr):
        metrics.update(metric.compute(view))
    if retrigger.options_of(suite) is not None:  # the re-trigger stage: the method is applied again
        start = metrics["sscd_mem"].per_prompt if "sscd_mem" in metrics else None
        threshold = (view.calibration.get("copy") or {}).get("threshold")
        metrics.update(retrigger.retrigger_metrics(pipe, suite, data, method, start, threshold, cache.root,
                                                   options.progress))
    summary = {name: metrics[name].value for name in suite.summary if name in metrics}
    missing_cols = [name for name in suite.summary if name not in metrics]
    if missing_cols:
        raise ConfigError(f"suite '{suite.name}': metrics produced no value for {missing_cols}")

    s = suite.sampler
    result = {
        "schema_version": SCHEMA_VERSION,
        "suite": {"name": suite.name, "version": suite.version, "sha256": suite.sha256(), "data": data.hashes,
                  **({"smoke": smoke_of(suite)} if smoke_of(suite) else {}),
                  **({"calibration_prompts": data.calibration_prompts} if data.calibration_prompts else {})},
        "method": {"name": method.name, "kind": method.kind, "config": method.config_dict(),
                   "config_sha256": method.config_sha256(), "source": METHODS.source(method.name),
                   "reference": method.reference, "report": ctx.report},
        "model": {"id": pipe.model_id, "weights_sha256": pipe.weights_sha256, "sampler": s.sampler,
                  "steps": s.steps, "guidance": s.guidance, "dtype": pipe.dtype_name,
                  "resolution": [s.height, s.width]},
        "summary": summary,
        "metrics": {k: v.to_json() for k, v in metrics.items()},
        "calibration": view.calibration,
        "cost": {"seconds_per_image": gen["seconds_per_image"], "peak_memory_mb": cost.RUN_PEAK.run_peak_mb(),
                 "preparation_seconds": gen["preparation_seconds"], "images_generated": gen["images_generated"],
                 "images_from_cache": gen["images_from_cache"], "vs_none": gen["vs_none"]},
        "provenance": {
            **provenance.collect(options.command),
            "seeds": {k: v for k, v in data.seeds.items()},
            "batch_size": options.batch_size, "batch_invariant": options.batch_invariant,
            "wall_seconds": time.perf_counter() - wall0,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **options.extra_provenance,
        },
    }
    if options.output:
        grid = thumbnails.memorized_grid(view)  # small PNG beside the result, for the report
        if grid is not None:
            result["thumbnails"] = thumbnails.write_beside(options.output, *grid)
        write_result(result, options.output)
    return result


@dataclass
class MethodOutcome:
    method: str
    status: str  # "ok", "failed", "skipped"
    output: str | None = None
    note: str = ""
    result: dict[str, Any] | None = None
    user_error: bool = False  # the failure is the user's to fix (a MemorybenchError)


def run_request(request: RunRequest, debug: bool = False) -> list[MethodOutcome]:
    """Run every method of the request in turn, each to its own result; one that fails is
    recorded and the next one runs. Training-time methods are skipped on suites that do not
    fine-tune. Returns nothing for the methods on a non-main ``accelerate`` shard."""
    suite, outcomes = request.suite, []
    for spec in request.methods:
        try:
            method = spec.build()
            if method.kind == "training" and not suite.fine_tunes:
                outcomes.append(MethodOutcome(spec.name, "skipped", note=(
                    f"kind 'training': it fine-tunes the model, and suite '{suite.name}' has no fine-tuning "
                    "step; run it on a fine-tuning suite (e.g. finetune-dup-v1)")))
                continue
            path = request.output_path(method)
            result = run(suite, spec.name, spec.settings, replace(request.options, output=str(path)))
            if result is not None:
                outcomes.append(MethodOutcome(spec.name, "ok", str(path), result=result))
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # record and go on: one broken method must not stop the others
            if debug:
                traceback.print_exc()
            user = isinstance(exc, MemorybenchError)
            what = str(exc) if user else f"{type(exc).__name__}: {exc}"
            outcomes.append(MethodOutcome(spec.name, "failed", note=what.splitlines()[0] if what else type(exc).__name__,
                                          user_error=user))
    return outcomes


def summary_lines(outcomes: list[MethodOutcome], columns: list[str]) -> list[str]:
    """One line per method: status, its first summary columns and its cost against none."""
    lines = []
    for o in outcomes:
        if o.status != "ok" or o.result is None:
            lines.append(f"{o.status:<7} {o.method}: {o.note}")
            continue
        values = "  ".join(f"{c}={o.result['summary'][c]:.4f}" for c in columns if c in o.result["summary"])
        ratio = (o.result["cost"].get("vs_none") or {}).get("seconds_per_image_ratio")
        cost_note = f"  cost x{ratio:.2f} vs none" if ratio is not None else ""
        lines.append(f"{o.status:<7} {o.method}: {values}{cost_note}  -> {o.output}")
    return lines
