"""The documentation: the MkDocs site builds strictly and holds what it promises, the README
stays a short front door whose links resolve, and the project's prose names papers rather
than internal notes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "leaderboards" / "schema" / "result-v1.json"
README_MAX_LINES = 150

# what the guides promise to render from the docstrings, page by page
API_REFERENCE = {
    "guides/writing-a-method": [
        "memorybench.api.method.Method", "memorybench.api.method.MethodContext",
        "memorybench.api.method.TrainingHook", "memorybench.api.method.FinetuneJob",
        "memorybench.api.method.apply_method",
    ],
    "guides/writing-a-detector": [
        "memorybench.api.detector.Detector", "memorybench.api.detector.DetectionScores",
        "memorybench.model.trajectory.early_trajectory", "memorybench.model.trajectory.StepRecord",
    ],
    "guides/writing-a-metric": [
        "memorybench.api.metric.Metric", "memorybench.api.metric.RunView",
        "memorybench.metrics.base.MetricValue",
    ],
    "guides/api": [
        "memorybench.api.registry.Registry", "memorybench.model.pipeline.PipelineAdapter",
        "memorybench.model.sampling.SamplingState", "memorybench.suites.spec.Suite",
        "memorybench.suites.data.SuiteData",
    ],
}

# references to material users do not have: design notes, research notes, issue numbers,
# the numbered starting papers (name a paper by its authors and title instead)
FORBIDDEN = ("DESIGN §", "DESIGN.md", "ANCHORS", "issue 3", "seed 000", "seed 001", "seed 002")
TEXT_SUFFIXES = {".md", ".py", ".yaml", ".yml", ".toml", ".txt", ".json", ".html", ".css", ".js", ".cfg", ".ini"}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return out


def page(site: Path, name: str) -> str:
    path = site / name / "index.html" if name else site / "index.html"
    assert path.is_file(), f"the built site has no {path.relative_to(site)}"
    return path.read_text(encoding="utf-8")


def test_site_builds_strictly_with_a_front_page(site):
    assert "memorybench" in page(site, "")


def test_methods_page_has_a_section_per_builtin_method(site):
    from memorybench.api.builtins import BUILTIN_METHODS

    html = page(site, "methods")
    missing = [name for name in BUILTIN_METHODS if f"<code>{name}</code>" not in html]
    assert not missing, f"methods page does not mention {missing}"


def test_detectors_page_has_a_section_per_builtin_detector(site):
    from memorybench.api.builtins import BUILTIN_DETECTORS

    html = page(site, "detectors")
    missing = [name for name in BUILTIN_DETECTORS if f'id="{name}"' not in html]
    assert not missing, f"detectors page has no section for {missing}"


def schema_paths(node: dict, prefix: str = "") -> list[str]:
    out = []
    for name, child in node.get("properties", {}).items():
        out.append(prefix + name)
        out.extend(schema_paths(child, f"{prefix}{name}."))
    return out


def test_results_page_renders_every_schema_property(site):
    html = page(site, "results")
    assert "schema_version" in html
    paths = schema_paths(json.loads(SCHEMA.read_text()))
    missing = [p for p in paths if f"<code>{p}</code>" not in html]
    assert not missing, f"results page lacks schema properties {missing[:10]}"


def test_results_page_renders_the_shipped_leaderboards(site):
    html = page(site, "results")
    for board in ("tinyworld-v1", "finetune-dup-v1", "tinyworld-defence-v1"):
        entries = json.loads((ROOT / "leaderboards" / f"{board}.json").read_text())["entries"]
        for entry in entries:
            value = entry["result"]["summary"]["sscd_mem"]
            assert f"{value:.3f}" in html, f"{board}: {entry['method']}'s sscd_mem {value:.3f} not on the results page"


@pytest.mark.parametrize("name", sorted(API_REFERENCE))
def test_api_reference_is_generated_from_docstrings(site, name):
    html = page(site, name)
    missing = [ident for ident in API_REFERENCE[name] if f'id="{ident}"' not in html]
    assert not missing, f"{name}: mkdocstrings rendered no {missing}"


def test_changelog_is_part_of_the_site(site):
    html = page(site, "changelog")
    assert "Unreleased" in html and "Suite versions" in html


def test_readme_is_a_short_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines (at most {README_MAX_LINES})"


def test_readme_links_only_to_files_that_exist():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)
    assert targets, "README.md links nowhere"
    broken = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue  # a URL or an anchor in the README itself
        path = target.split("#", 1)[0]
        if not (ROOT / path).exists():
            broken.append(target)
    assert not broken, f"README.md links to missing files: {broken}"


def forbidden_hits(paths: list[Path]) -> list[str]:
    hits = []
    for base in paths:
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            if path.suffix not in TEXT_SUFFIXES or "__pycache__" in path.parts:
                continue
            text = path.read_text(encoding="utf-8", errors="replace")
            for needle in FORBIDDEN:
                for number, line in enumerate(text.splitlines(), 1):
                    if needle in line:
                        hits.append(f"{path.relative_to(ROOT)}:{number}: {needle!r}")
    return hits


def test_docs_and_readme_cite_papers_not_internal_notes():
    hits = forbidden_hits([ROOT / "docs", ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "mkdocs.yml"])
    assert not hits, "\n".join(hits)


def test_code_cites_papers_not_internal_notes():
    """Docstrings and comments of the package and the built-in methods (shown in the API
    reference and in results' ``reference`` fields) follow the same rule as the docs."""
    hits = forbidden_hits([ROOT / "memorybench", ROOT / "methods"])
    assert not hits, "\n".join(hits)
