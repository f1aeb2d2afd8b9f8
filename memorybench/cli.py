"""The ``memorybench`` command line.

Errors a user can cause print one line (``error: ...``) and exit 2; unexpected errors
print one line and exit 1; ``--debug`` shows the traceback for either.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import MemorybenchError

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


def _load_plugins(args: argparse.Namespace) -> None:
    from .registry import load_plugin

    for spec in getattr(args, "plugins", None) or []:
        load_plugin(spec)


# -- list -------------------------------------------------------------------------------
def cmd_list(args: argparse.Namespace) -> int:
    from .registry import DETECTORS, METHODS, METRICS

    _load_plugins(args)
    if args.what == "suites":
        from .suite import list_suites

        for suite in list_suites():
            print(f"{suite.name}\tv{suite.version}\t{suite.description}")
        return 0
    registry = {"methods": METHODS, "detectors": DETECTORS, "metrics": METRICS}[args.what]
    broken = registry.broken()
    for name in registry.names():
        if name in broken:
            print(f"{name}\tBROKEN\t{registry._entries[name].source}: {broken[name]}")
            continue
        try:
            obj = registry.get(name)
        except MemorybenchError as exc:
            print(f"{name}\tBROKEN\t{exc}")
            continue
        kind = getattr(obj, "kind", args.what[:-1])
        source = registry._entries[name].source
        origin = "" if source == "builtin" else f" [{source}]"
        print(f"{name}\t{kind}\t{getattr(obj, 'description', '')}{origin}")
    return 0


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


def cmd_run(args: argparse.Namespace) -> int:
    from .config import parse_set_options
    from .registry import METHODS
    from .runner import RunOptions, default_output_path, run
    from .suite import load_suite

    _load_plugins(args)
    suite = load_suite(args.suite)
    settings = parse_set_options(args.set)
    method = METHODS.get(args.method).from_settings(settings)  # validate before any heavy work
    output = args.output or str(default_output_path(suite, method))
    options = RunOptions(model_path=args.model, output=output, cache_dir=args.cache_dir, device=args.device,
                         dtype=args.dtype, batch_size=args.batch_size, progress=not args.no_progress,
                         command=["memorybench"] + sys.argv[1:])
    result = run(suite, args.method, settings, options)
    if result is None:  # a non-main accelerate shard: the main process reports
        return 0
    _print_summary(result)
    print(f"result written to {output}")
    return 0


# -- validate ---------------------------------------------------------------------------
def cmd_validate(args: argparse.Namespace) -> int:
    from .config import parse_set_options
    from .registry import METHODS
    from .validate import validate_method

    _load_plugins(args)
    report = validate_method(METHODS.get(args.name), parse_set_options(args.set))
    for line in report.lines():
        print(line)
    if not report.ok:
        print(f"error: method '{args.name}' failed validation", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"method '{args.name}' is valid")
    return 0


# -- new-method -------------------------------------------------------------------------
def cmd_new_method(args: argparse.Namespace) -> int:
    from .scaffold import scaffold_method

    folder = scaffold_method(args.name, Path(args.dir), force=args.force)
    print(f"created plugin package in {folder}")
    print(f"next: pip install {folder} && memorybench validate {args.name}")
    return 0


# -- schema -----------------------------------------------------------------------------
def cmd_schema(args: argparse.Namespace) -> int:
    from .schema import RESULT_SCHEMA

    text = json.dumps(RESULT_SCHEMA, indent=2) + "\n"
    if args.write:
        from .cache import atomic_write_text

        atomic_write_text(Path(args.write), text)
        print(f"schema written to {args.write}")
    else:
        print(text, end="")
    return 0


# -- tinyworld --------------------------------------------------------------------------
def cmd_tinyworld_train(args: argparse.Namespace) -> int:
    from .tinyworld.train import train_tinyworld

    out = train_tinyworld(Path(args.out), progress=not args.no_progress)
    print(f"tiny world written to {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

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

    p = sub.add_parser("list", help="list methods, detectors, metrics or suites")
    p.add_argument("what", choices=["methods", "detectors", "metrics", "suites"])
    plugins_arg(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("run", help="generate, evaluate and write a result JSON")
    p.add_argument("--suite", required=True, help="suite name (memorybench list suites) or YAML file")
    p.add_argument("--method", required=True, help="method name (memorybench list methods)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="method config value (repeatable)")
    p.add_argument("--model", metavar="PATH", help="local diffusers StableDiffusionPipeline folder")
    p.add_argument("--output", metavar="FILE.json", help="result path (default results/SUITE/METHOD-CFG.json)")
    p.add_argument("--cache-dir", metavar="DIR", help="generation cache (default ~/.cache/memorybench)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    p.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                   help="auto: fp32 on CPU, fp16 on GPU")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    plugins_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("validate", help="check that a method is reversible and its config round-trips")
    p.add_argument("name")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
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

    p = sub.add_parser("tinyworld", help="the embedded tiny world")
    tw = p.add_subparsers(dest="tinyworld_command", metavar="SUBCOMMAND")
    tw.required = True
    t = tw.add_parser("train", help="train the tiny world from scratch (CPU, under an hour)")
    t.add_argument("--out", required=True)
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_tinyworld_train)
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
