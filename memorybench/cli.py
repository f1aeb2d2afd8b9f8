"""The ``memorybench`` command line.

Errors a user can cause print one line (``error: ...``) and exit 2; unexpected errors
print one line and exit 1; ``--debug`` shows the traceback for either.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from memorybench.errors import ConfigError, MemorybenchError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


def _quiet_libraries() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("diffusers", "transformers", "torch_fidelity"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
        dlog.disable_progress_bar()
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except ImportError:
        pass


def device_arg(text: str) -> str:
    """argparse type of --device: cpu, cuda or cuda:N, checked against the devices torch sees,
    so a typo or a machine without a GPU is a usage error before any model loads."""
    if text == "cpu":
        return text
    if not re.fullmatch(r"cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"'{text}' is not a device: use cpu, cuda or cuda:N")
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(text.partition(":")[2] or 0)
    if index >= visible:
        raise argparse.ArgumentTypeError(
            f"'{text}': torch {torch.__version__} sees {visible} CUDA device(s) on this machine; use --device cpu")
    return text


def _load_plugins(args: argparse.Namespace) -> None:
    from memorybench.api.registry import load_plugin

    for spec in getattr(args, "plugins", None) or []:
        load_plugin(spec)


def _write_or_print(text: str, path: str | None, what: str) -> None:
    """``text`` to the file ``path`` (atomically) when given, else to stdout."""
    if not path:
        print(text, end="")
        return
    from memorybench.core.io import atomic_write_text

    atomic_write_text(Path(path), text)
    print(f"{what} written to {path}")


# -- list -------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    _load_plugins(args)
    if args.what == "suites":
        from memorybench.suites.spec import list_suites

        for suite in list_suites():
            print(f"{suite.name}\tv{suite.version}\t{suite.description}")
        return 0
    registry = _registries()[args.what]
    broken = registry.broken()
    for name in registry.names():
        source = registry.source(name)
        if name in broken:
            print(f"{name}\tBROKEN\t{source}: {broken[name]}")
            continue
        try:
            obj = registry.get(name)
        except MemorybenchError as exc:
            print(f"{name}\tBROKEN\t{exc}")
            continue
        kind = getattr(obj, "kind", args.what[:-1])
        origin = "" if source == "builtin" else f" [{source}]"
        print(f"{name}\t{kind}\t{getattr(obj, 'description', '')}{origin}")
    return 0


def _registries() -> dict:
    from memorybench.api.detector import DETECTORS
    from memorybench.api.method import METHODS
    from memorybench.api.metric import METRICS
    from memorybench.suites.data import DATA_SOURCES

    return {"methods": METHODS, "detectors": DETECTORS, "metrics": METRICS, "data-sources": DATA_SOURCES}


# -- run --------------------------------------------------------------------------------
def _print_summary(result: dict) -> None:
    rows = []
    for name, value in result["summary"].items():
        m = result["metrics"][name]
        lo, hi = m["ci95"]
        ci = f"[{lo:.3f}, {hi:.3f}]" if lo is not None else ""
        arrow = "higher better" if m["higher_is_better"] else "lower better"
        rows.append((name, f"{value:.4f}", ci, str(m["n"]), arrow))
    head = ("metric", "value", "95% CI", "n", "")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(len(head))]
    print(f"suite {result['suite']['name']} v{result['suite']['version']}  method {result['method']['name']}"
          f"  model {result['model']['id']}")
    for row in [head] + rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    cost = result["cost"]
    print(f"cost: {cost['seconds_per_image']:.4f} s/image, prepare {cost['preparation_seconds']:.2f} s, "
          f"peak {cost['peak_memory_mb']:.0f} MB; generated {cost['images_generated']}, "
          f"from cache {cost['images_from_cache']}; wall {result['provenance']['wall_seconds']:.1f} s")


def _smoke(args: argparse.Namespace):
    from memorybench.suites.smoke import SmokeOverrides

    return SmokeOverrides(args.limit_prompts, args.seeds, args.steps, args.resolution)


def _suite(args: argparse.Namespace):
    """The suite a command works on: by name or file, with --suite-option and smoke flags."""
    from memorybench.core.config import parse_set_options
    from memorybench.suites.smoke import apply_smoke
    from memorybench.suites.spec import load_suite, with_options

    return apply_smoke(with_options(load_suite(args.suite), parse_set_options(args.suite_option)), _smoke(args))


def cmd_run(args: argparse.Namespace) -> int:
    """Parse the command line once into a run request, run it, report each method."""
    from memorybench.core.config import parse_set_options
    from memorybench.realdata.inputs import parse_data_paths
    from memorybench.run.request import RunOptions, build_run_request, parse_shard
    from memorybench.run.runner import run_request, summary_lines

    _load_plugins(args)
    options = RunOptions(model_path=args.model, cache_dir=args.cache_dir, device=args.device,
                         dtype=args.dtype, batch_size=args.batch_size, progress=not args.no_progress,
                         command=["memorybench"] + sys.argv[1:], data_paths=parse_data_paths(args.data),
                         shard=parse_shard(args.shard), metrics_only=args.metrics_only,
                         batch_invariant=args.batch_invariant)
    request = build_run_request(args.suite, args.method, parse_set_options(args.set),
                                parse_set_options(args.suite_option), args.output, args.output_dir, options,
                                smoke=_smoke(args))
    outcomes = run_request(request, debug=args.debug)
    for o in outcomes:
        if o.status == "ok" and o.result is not None:
            _print_summary(o.result)
            print(f"result written to {o.output}" + ("\n" if len(request.methods) > 1 else ""))
    if len(request.methods) > 1:
        suite = request.suite
        print(f"suite {suite.name} v{suite.version}: {len(outcomes)} method(s)")
        for line in summary_lines(outcomes, list(suite.summary)[:4]):
            print("  " + line)
    failed = [o for o in outcomes if o.status == "failed"]
    if not failed:
        return 0
    if len(request.methods) == 1:
        print(f"error: {failed[0].note}", file=sys.stderr)
    else:
        print(f"error: {len(failed)} method(s) failed: {', '.join(o.method for o in failed)}", file=sys.stderr)
    return EXIT_USER_ERROR if all(o.user_error for o in failed) else EXIT_INTERNAL_ERROR


# -- publish / export / report -----------------------------------------------------------
def cmd_publish(args: argparse.Namespace) -> int:
    from memorybench.results.leaderboard import publish

    report = publish(args.results, args.leaderboard, suite_name=args.suite, model_weights=args.model_weights)
    for line in report.lines():
        print(line)
    for note in report.notes:
        print(note, file=sys.stderr)
    print(f"leaderboard written to {report.leaderboard}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from memorybench.core.io import atomic_write_text
    from memorybench.results.compare import compare_results, load_comparable, render

    def load(path: str, entry: str | None) -> tuple[dict, str]:
        method, _, config = (entry or "").partition("@")
        result = load_comparable(path, method or None, config or None)
        return result, f"{path} ({result['method']['name']} {result['method']['config_sha256'][:8]}, " \
                       f"{result['suite']['name']} v{result['suite']['version']})"

    (a, label_a), (b, label_b) = load(args.a, args.method), load(args.b, args.method_b or args.method)
    comparison = compare_results(a, b)
    print(render(comparison, label_a, label_b))
    if args.json:
        atomic_write_text(Path(args.json), json.dumps({"a": label_a, "b": label_b, **comparison}, indent=2) + "\n")
        print(f"comparison written to {args.json}")
    return 0


def cmd_export_model_index(args: argparse.Namespace) -> int:
    from memorybench.results.leaderboard import find_entry, load_leaderboard
    from memorybench.results.model_index import render

    entry = find_entry(load_leaderboard(args.leaderboard), args.method, args.config_sha256)
    _write_or_print(render(entry, args.format), args.out, "model-index")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from memorybench.results.report import text_table, write_report

    page = write_report(args.leaderboard, args.out)
    for line in text_table(args.leaderboard):
        print(line)
    print(f"report written to {page}")
    return 0


# -- data -------------------------------------------------------------------------------
def cmd_data_show(args: argparse.Namespace) -> int:
    from memorybench.realdata.show import describe_data_file

    for line in describe_data_file(args.file):
        print(line)
    return 0


# -- validate ---------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from memorybench.core.config import parse_set_options
    from memorybench.api.method import METHODS
    from memorybench.run.validate import validate_method

    _load_plugins(args)
    pipe = None
    if args.model:
        from memorybench.model.pipeline import PipelineAdapter

        pipe = PipelineAdapter.from_folder(args.model)
    report = validate_method(METHODS.get(args.name), parse_set_options(args.set), pipe=pipe,
                             resolution=args.resolution or (64 if args.model else 32))
    for line in report.lines():
        print(line)
    if not report.ok:
        print(f"error: method '{args.name}' failed validation", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"method '{args.name}' is valid")
    return 0


# -- new-method -------------------------------------------------------------------------
def cmd_new_method(args: argparse.Namespace) -> int:
    from memorybench.api.scaffold import scaffold_method

    folder = scaffold_method(args.name, Path(args.dir), force=args.force)
    print(f"created plugin package in {folder}")
    print(f"next: pip install {folder} && memorybench validate {args.name}")
    return 0


# -- schema -----------------------------------------------------------------------------
def cmd_schema(args: argparse.Namespace) -> int:
    from memorybench.results.schema import RESULT_SCHEMA

    _write_or_print(json.dumps(RESULT_SCHEMA, indent=2) + "\n", args.write, "schema")
    return 0


# -- detect -----------------------------------------------------------------------------
def cmd_detect(args: argparse.Namespace) -> int:
    from memorybench.core.config import parse_set_options
    from memorybench.run.detect import DetectOptions, default_detection_path, format_report, run_detection
    from memorybench.api.detector import DETECTORS
    from memorybench.realdata.inputs import parse_data_paths

    _load_plugins(args)
    suite = _suite(args)
    settings = parse_set_options(args.set)
    detector = DETECTORS.get(args.detector).from_settings(settings)  # validate before loading the model
    output = args.output or str(default_detection_path(suite, detector))
    options = DetectOptions(model_path=args.model, output=output, device=args.device, dtype=args.dtype,
                            batch_size=args.batch_size, progress=not args.no_progress, cache_dir=args.cache_dir,
                            command=["memorybench"] + sys.argv[1:], data_paths=parse_data_paths(args.data))
    report = run_detection(suite, args.detector, settings, options)
    for line in format_report(report):
        print(line)
    print(f"report written to {output}")
    return 0


# -- analyze ----------------------------------------------------------------------------
def cmd_analyze_wanda_masks(args: argparse.Namespace) -> int:
    from memorybench.analysis.wanda_masks import (
        FIGURE_NAME,
        REPORT_NAME,
        MaskAnalysisOptions,
        analyze_wanda_masks,
        format_table,
    )
    from memorybench.core.config import parse_set_options
    from memorybench.realdata.inputs import parse_data_paths

    suite = _suite(args)
    options = MaskAnalysisOptions(data_paths=parse_data_paths(args.data), cache_dir=args.cache_dir,
                                  subsets=args.subsets, subset_size=args.subset_size, mode=args.mode, seed=args.seed,
                                  control=not args.no_control, wanda=parse_set_options(args.set),
                                  model_path=args.model, device=args.device, progress=not args.no_progress,
                                  command=["memorybench"] + sys.argv[1:])
    report = analyze_wanda_masks(suite, options, args.out)
    for line in format_table(report):
        print(line)
    print(f"written {Path(args.out) / REPORT_NAME} and {Path(args.out) / FIGURE_NAME}")
    return 0


def cmd_random_model(args: argparse.Namespace) -> int:
    from memorybench.model.random_sd import save_random_sd

    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out '{out}' exists and is not empty")
    save_random_sd(args.kind, out, size=args.size, seed=args.seed)
    print(f"random-weights {args.kind} ({args.size}) written to {out}: use --model {out}")
    return 0


# -- tinyworld --------------------------------------------------------------------------
def cmd_tinyworld_train(args: argparse.Namespace) -> int:
    from memorybench.core.config import parse_set_options
    from memorybench.tinyworld import world_path
    from memorybench.tinyworld.install import shipped_weights_verdict
    from memorybench.tinyworld.model import TinyWorldConfig
    from memorybench.tinyworld.train import train_tinyworld

    # the defaults are the shipped recipe; --set changes single fields (recorded in the manifest)
    config = TinyWorldConfig.from_dict(parse_set_options(args.set))
    if args.set:
        print("recipe changes from the shipped world: " + ", ".join(args.set))
    out = train_tinyworld(Path(args.out), config, progress=not args.no_progress, device=args.device)
    print(f"tiny world written to {out}")
    verdict = shipped_weights_verdict(out, world_path())
    if verdict:
        print(verdict)
    return 0


def cmd_tinyworld_install(args: argparse.Namespace) -> int:
    from memorybench.tinyworld import world_path
    from memorybench.tinyworld.install import install_world

    target = Path(args.target) if args.target else world_path()
    manifest = install_world(Path(args.run), target)
    print(f"installed {args.run} -> {target} ({len(manifest['files'])} files)")
    print("every figure measured on the previous world is now stale: bump the version of the suites on it "
          "(tinyworld-v1, finetune-dup-v1), then re-measure and re-publish (docs/tinyworld.md, shipping a world)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from memorybench import __version__

    parser = argparse.ArgumentParser(
        prog="memorybench",
        description="Benchmark memorization mitigation in text-to-image diffusion models.",
    )
    parser.add_argument("--version", action="version", version=f"memorybench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def plugins_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--plugins", action="append", metavar="MODULE_OR_FILE.py",
                       help="import unpublished plugin code (repeatable)")

    def command_group(name: str, help_text: str, metavar: str) -> argparse._SubParsersAction:
        """A command with sub-commands of its own (export, data, analyze, tinyworld)."""
        group = sub.add_parser(name, help=help_text).add_subparsers(dest=f"{name}_command", metavar=metavar)
        group.required = True
        return group

    def model_args(p: argparse.ArgumentParser, dtype: bool = True) -> None:
        """The model a command loads and where it runs (run, detect, analyze)."""
        p.add_argument("--model", metavar="PATH", help="local diffusers StableDiffusionPipeline folder")
        p.add_argument("--device", type=device_arg, default="cpu", help="cpu or cuda[:N]")
        if dtype:
            p.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                           help="auto: fp32 on CPU, fp16 on GPU")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    def suite_args(p: argparse.ArgumentParser) -> None:
        """What a command reads besides the model (run, detect, analyze): local data, suite
        options, the cache, and the smoke flags that shrink a suite for a quick try."""
        p.add_argument("--data", action="append", metavar="KEY=PATH",
                       help="local data the suite reads, e.g. prompts=webster.csv gt_images=DIR (repeatable)")
        p.add_argument("--suite-option", action="append", metavar="KEY=VALUE",
                       help="change a suite option, e.g. sscd_protocol=wen2024 (changes the suite hash; repeatable)")
        p.add_argument("--cache-dir", metavar="DIR", help="generation cache (default ~/.cache/memorybench)")
        smoke = p.add_argument_group("smoke run (shrinks the suite: its hash changes, no cost is timed against none, "
                                     "and the result cannot be published)")
        smoke.add_argument("--limit-prompts", type=int, metavar="N", help="only the first N prompts of each prompt set")
        smoke.add_argument("--seeds", type=int, metavar="N", help="N seeds per prompt")
        smoke.add_argument("--steps", type=int, metavar="N", help="N sampler steps")
        smoke.add_argument("--resolution", type=int, metavar="PX", help="generate PX x PX images")

    p = sub.add_parser("list", help="list methods, detectors, metrics, data sources or suites")
    p.add_argument("what", choices=["methods", "detectors", "metrics", "data-sources", "suites"])
    plugins_arg(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="generate, evaluate and write a result JSON")
    p.add_argument("--suite", required=True, help="suite name (memorybench list suites) or YAML file")
    p.add_argument("--method", required=True,
                   help="method name (memorybench list methods), a comma list, or 'all' (every built-in)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="method config value (repeatable)")
    model_args(p)
    suite_args(p)
    p.add_argument("--output", metavar="FILE.json", help="result path (default results/SUITE/METHOD-CFG.json)")
    p.add_argument("--output-dir", metavar="DIR", help="folder for one result per method (default results/SUITE)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--batch-invariant", action="store_true",
                   help="sample each image on its own: bit-identical images at any --batch-size (slower)")
    scale = p.add_argument_group("many machines without a process group")
    scale.add_argument("--shard", metavar="I/N", help="generate shard I of N (0-based) into the shared --cache-dir, "
                       "compute no metrics (e.g. a Slurm array: --shard $SLURM_ARRAY_TASK_ID/N)")
    scale.add_argument("--metrics-only", action="store_true",
                       help="evaluate images already in the cache; refuse while any is missing")
    plugins_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("publish", help="validate results and merge them into a leaderboard JSON")
    p.add_argument("results", nargs="+", metavar="RESULT.json")
    p.add_argument("--leaderboard", required=True, metavar="FILE.json", help="e.g. leaderboards/tinyworld-v1.json")
    p.add_argument("--suite", help="suite of a new leaderboard (default: the file's, else its name)")
    p.add_argument("--model-weights", metavar="SHA256_OR_FOLDER",
                   help="the model weights every result must have: a sha256 as results record it, or the "
                        "local model folder to hash (without it, a new board on a model given by path takes "
                        "those of its first result)")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("compare", help="compare two results or leaderboard entries: how each was made, and each "
                                       "column with a paired bootstrap CI of the difference")
    p.add_argument("a", metavar="A.json", help="a result JSON, or a leaderboard JSON with --method")
    p.add_argument("b", metavar="B.json", help="a result JSON, or a leaderboard JSON (its entry: --method-b, else --method)")
    p.add_argument("--method", metavar="NAME[@CONFIG]", help="the entry to take from a leaderboard (config: sha256 prefix)")
    p.add_argument("--method-b", metavar="NAME[@CONFIG]", help="the entry to take from B when it differs from --method")
    p.add_argument("--json", metavar="FILE", help="also write the comparison as JSON")
    p.set_defaults(func=cmd_compare)

    ex = command_group("export", "export a leaderboard entry in another format", "FORMAT")
    e = ex.add_parser("model-index", help="Hugging Face model card metadata (model-index) for one entry")
    e.add_argument("--leaderboard", required=True, metavar="FILE.json")
    e.add_argument("--method", required=True)
    e.add_argument("--config-sha256", metavar="HEX", help="config hash (or its prefix) when a method has several")
    e.add_argument("--format", choices=["yaml", "json"], default="yaml")
    e.add_argument("--out", metavar="FILE", help="write here instead of printing")
    e.set_defaults(func=cmd_export_model_index)

    p = sub.add_parser("report", help="write the static HTML leaderboard page")
    p.add_argument("--leaderboard", required=True, metavar="FILE.json")
    p.add_argument("--out", required=True, metavar="DIR")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("validate", help="check that a method is reversible and its config round-trips")
    p.add_argument("name")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--model", metavar="PATH", help="check on this model folder (default: a tiny random pipeline)")
    p.add_argument("--resolution", type=int, metavar="PX", help="image size of the check (default 32; 64 with --model)")
    plugins_arg(p)
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("new-method", help="scaffold an installable method plugin package")
    p.add_argument("name")
    p.add_argument("--dir", required=True, help="folder to create")
    p.add_argument("--force", action="store_true", help="write into an existing non-empty folder")
    p.set_defaults(func=cmd_new_method)

    p = sub.add_parser("schema", help="print or write the result JSON Schema")
    p.add_argument("--write", metavar="PATH")
    p.set_defaults(func=cmd_schema)

    dsub = command_group("data", "inspect local data files before a run", "SUBCOMMAND")
    d = dsub.add_parser("show", help="format, prompt count, prompts per label and sha256 of a data file")
    d.add_argument("file", help="a Webster-500 prompt file (Wen's JSONL or NeMo's CSV) or a COCO captions JSON")
    d.set_defaults(func=cmd_data_show)

    p = sub.add_parser("detect", help="score memorized vs general prompts with a detector: AUROC, TPR@1%%FPR, cost")
    p.add_argument("--suite", required=True, help="suite name or YAML file (needs prompt sets memorized and general)")
    p.add_argument("--detector", required=True, help="detector name (memorybench list detectors)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="detector config value (repeatable)")
    model_args(p)
    suite_args(p)
    p.add_argument("--limit", dest="limit_prompts", type=int, help=argparse.SUPPRESS)  # the older name of --limit-prompts
    p.add_argument("--output", metavar="FILE.json", help="report path (default results/SUITE/detect-NAME-CFG.json)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per detector call")
    plugins_arg(p)
    p.set_defaults(func=cmd_detect)

    asub = command_group("analyze", "analyses of methods (e.g. overlap of Wanda masks across prompt subsets)", "ANALYSIS")
    a = asub.add_parser("wanda-masks", help="pairwise IoU and density of wanda-prune masks from memorized prompt subsets")
    a.add_argument("--suite", required=True)
    a.add_argument("--subsets", type=int, default=5, help="number of memorized prompt subsets (>= 2)")
    a.add_argument("--subset-size", type=int, metavar="N", help="prompts per subset (default: pool size // subsets)")
    a.add_argument("--mode", choices=["disjoint", "random"], default="disjoint",
                   help="disjoint: no prompt in two subsets; random: independent draws without replacement")
    a.add_argument("--seed", type=int, default=0, help="seed of the subset draw")
    a.add_argument("--set", action="append", metavar="KEY=VALUE", help="wanda-prune config value (repeatable)")
    a.add_argument("--no-control", action="store_true", help="skip the general-prompt control mask")
    a.add_argument("--out", required=True, metavar="DIR", help="folder for wanda-masks.json and the heatmap PNG")
    model_args(a, dtype=False)
    suite_args(a)
    a.set_defaults(func=cmd_analyze_wanda_masks)

    p = sub.add_parser("random-model", help="write a Stable Diffusion model folder with random weights "
                       "(SD 1.5, SD 2.1 or SDXL architecture) to try the real path without real weights")
    p.add_argument("kind", choices=["sd15", "sd21", "sdxl"])
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write (a diffusers pipeline, for --model DIR)")
    p.add_argument("--size", choices=["small", "full"], default="small",
                   help="small: the architecture's structure with narrow layers (seconds); full: the released sizes")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_random_model)

    tw = command_group("tinyworld", "the embedded tiny world", "SUBCOMMAND")
    t = tw.add_parser("train", help="train the tiny world from scratch (CPU, under an hour)")
    t.add_argument("--out", required=True)
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change one field of the recipe, e.g. unet_steps=3000 or prediction_type=epsilon (repeatable)")
    t.add_argument("--device", type=device_arg, default="cpu",
                   help="cpu (default; the shipped world was trained on 2 CPU cores) or cuda[:N] (its weights will differ)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_tinyworld_train)
    i = tw.add_parser("install", help="make a finished training run the shipped tiny world (files checked against its manifest)")
    i.add_argument("run", metavar="RUN_DIR", help="the --out folder of `memorybench tinyworld train`")
    i.add_argument("--target", metavar="DIR", help="world folder to replace (default: the shipped world)")
    i.set_defaults(func=cmd_tinyworld_install)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.debug:
        _quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except MemorybenchError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted: finished images are cached; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for the user; --debug for the traceback
        if args.debug:
            raise
        print(f"error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
