"""The shape of the package: no import cycles, a short top level, old import paths kept.

The import graph is read from the source with ``ast``: every ``import`` anywhere in a
module counts, including those under ``if TYPE_CHECKING:`` and inside functions (a lazy
import back up is still a cycle a reader has to hold in their head).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
# where each top-level package of the distribution lives in the source tree
PACKAGE_FOLDERS = {
    "memorybench": ROOT / "memorybench",
    "memorybench.methods": ROOT / "methods",
    "memorybench.datasets": ROOT / "datasets",
}
# old public import paths, kept as thin re-exports for published plugins
COMPAT_MODULES = {
    "memorybench.method": ["Method", "MethodContext", "TrainingHook", "apply_method"],
    "memorybench.detector": ["Detector", "DetectionScores", "early_trajectory", "per_prompt", "clean_estimate",
                             "capture_processors"],
    "memorybench.evaluation": ["Metric", "RunView"],
    "memorybench.registry": ["METHODS", "DETECTORS", "METRICS", "register_method", "register_detector",
                             "register_metric", "load_plugin"],
    "memorybench.pipeline": ["PipelineAdapter", "SamplerSettings"],
    "memorybench.finetune": ["FinetuneJob", "FinetuneRecipe", "FinetuneSet"],
    "memorybench.config": ["config_from_dict", "config_to_dict", "sha256_json", "ConfiguredPlugin"],
    "memorybench.validate": ["validate_method"],
}
MAX_TOP_LEVEL_MODULES = 12


def source_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every Python file of the distribution."""
    out = {}
    for package, folder in PACKAGE_FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if package == "memorybench" and parts and parts[0] in ("methods", "datasets"):
                continue
            out[".".join([package, *parts])] = path
    return out


def imported_names(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules of this distribution that ``module`` imports, anywhere in its file."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            # `from a.b import c` imports module a.b.c when it is one, else a.b
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def import_graph() -> nx.DiGraph:
    modules = source_modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        for target in imported_names(module, path, set(modules)):
            graph.add_edge(module, target)
    return graph


def test_the_graph_sees_type_checking_and_lazy_imports():
    graph = import_graph()
    # a sanity check on the reader itself: edges of every kind are there
    assert graph.number_of_edges() > 100
    assert graph.has_edge("memorybench.cli", "memorybench.run.runner")  # a lazy import in a function


def test_no_import_cycles():
    graph = import_graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_module_imports_a_compatibility_shim():
    graph = import_graph()
    users = {shim: sorted(src for src in graph.predecessors(shim) if src != "memorybench")
             for shim in COMPAT_MODULES}
    assert not any(users.values()), f"modules importing old paths instead of their new home: {users}"


def test_top_level_is_short():
    top = sorted(p.name for p in (ROOT / "memorybench").glob("*.py"))
    assert len(top) <= MAX_TOP_LEVEL_MODULES, top


@pytest.mark.parametrize("module", sorted(COMPAT_MODULES))
def test_old_import_paths_still_work(module):
    mod = importlib.import_module(module)
    for name in COMPAT_MODULES[module]:
        assert hasattr(mod, name), f"{module}.{name} is gone"


def test_every_module_imports():
    failures = {}
    for module in sorted(source_modules()):
        try:
            importlib.import_module(module)
        except Exception as exc:  # collect all, not just the first
            failures[module] = f"{type(exc).__name__}: {exc}"
    assert not failures, failures
