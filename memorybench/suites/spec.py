"""Suites: versioned, hashed descriptions of what a run measures.

A suite names the model, the prompt sets and seeds per prompt, the sampler, and the
metrics; its identity is the sha256 of its canonical JSON, so two results are comparable
exactly when their suite name, version and hash agree. Suites ship as YAML files in
``memorybench/suites/``. Suite files are read by ``yaml.safe_load``'s rules (no tag runs
code) and, further, without aliases and within a size limit, so a small file cannot expand
into a huge one (an alias bomb); every failure is one ``ConfigError`` line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from memorybench.core.config import config_from_dict, config_to_dict, sha256_json
from memorybench.errors import ConfigError, UnknownNameError
from memorybench.model.pipeline import SamplerSettings
from memorybench.model.sampling import seed_range
from memorybench.suites.finetune import FinetuneRecipe


@dataclass(frozen=True)
class PromptSetSpec:
    name: str
    seeds: int  # seeds per prompt: seed_offset .. seed_offset + seeds - 1
    prompts: tuple[str, ...] = ()  # inline prompts (source "inline")
    limit: int | None = None  # first N prompts of the source
    seed_offset: int = 0

    def seed_list(self) -> list[int]:
        return seed_range(self.seeds, self.seed_offset)


@dataclass(frozen=True)
class Suite:
    name: str
    version: int
    description: str
    model: str  # "dummy" (random weights), "tinyworld" (shipped), or "folder" (--model PATH)
    data: str  # data source: "inline", "tinyworld", ...
    sampler: SamplerSettings
    prompt_sets: tuple[PromptSetSpec, ...]
    metrics: tuple[str, ...]
    summary: tuple[str, ...]  # leaderboard columns, in order
    lower_is_better_note: str = ""
    calibration_prompts: int = 0  # prompts of the first set a method may fit on; excluded from eval
    options: dict[str, Any] = field(default_factory=dict)  # source- and metric-specific settings

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)

    def sha256(self) -> str:
        return sha256_json(self.to_dict())

    def finetune_recipe(self) -> FinetuneRecipe | None:
        """The fine-tune every method's model goes through first, from the ``finetune_*``
        options (unknown ones rejected by name), or None: the one rule for "this suite fine-tunes"."""
        return FinetuneRecipe.from_options(self.options, owner=f"suite '{self.name}'")

    @property
    def fine_tunes(self) -> bool:
        return self.finetune_recipe() is not None

    def prompt_set(self, name: str) -> PromptSetSpec:
        for spec in self.prompt_sets:
            if spec.name == name:
                return spec
        raise ConfigError(f"suite '{self.name}' has no prompt set '{name}'")


def suite_from_dict(data: dict[str, Any], origin: str = "suite") -> Suite:
    data = dict(data)
    try:
        data["sampler"] = config_from_dict(SamplerSettings, data.get("sampler", {}), owner=f"{origin}.sampler")
        data["prompt_sets"] = tuple(
            config_from_dict(PromptSetSpec, ps, owner=f"{origin}.prompt_sets[{i}]")
            for i, ps in enumerate(data.get("prompt_sets", []))
        )
    except AttributeError as exc:
        raise ConfigError(f"{origin}: malformed suite: {exc}") from exc
    # nested dataclasses already built: validate the rest by a shallow pass
    fields = {f.name for f in dataclasses.fields(Suite)}
    unknown = set(data) - fields
    if unknown:
        raise ConfigError(f"{origin}: unknown key(s) {sorted(unknown)}")
    for list_key in ("metrics", "summary"):
        data[list_key] = tuple(data.get(list_key, ()))
    try:
        return Suite(**data)
    except TypeError as exc:
        raise ConfigError(f"{origin}: {exc}") from exc


MAX_SUITE_BYTES = 1024 * 1024  # a suite file is a page of YAML; prompts at scale come from data files


class _SuiteLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses aliases (``*name``): suites never need them, and each alias
    can multiply what the file expands to."""

    def compose_node(self, parent, index):  # noqa: ANN001 (PyYAML's signature)
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(None, None, f"alias *{event.anchor} is not allowed in a suite file "
                                              "(write the value out)", event.start_mark)
        return super().compose_node(parent, index)


def parse_suite_yaml(text: str, origin: str) -> Any:
    """A suite file's YAML, or one ``ConfigError`` line naming the file and the problem."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SUITE_BYTES:
        raise ConfigError(f"suite '{origin}' is larger than {MAX_SUITE_BYTES // 1024} KiB: not a suite file")
    try:
        return yaml.load(text, Loader=_SuiteLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "malformed YAML").split())
        raise ConfigError(f"suite '{origin}' is not a valid suite file{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"suite '{origin}' is not valid YAML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise ConfigError(f"suite '{origin}' is nested too deeply to be a suite file") from None


def _suite_files() -> dict[str, Any]:
    folder = resources.files("memorybench") / "suites"
    return {p.name[:-5]: p for p in folder.iterdir() if p.name.endswith(".yaml")}


def list_suites() -> list[Suite]:
    return [load_suite(name) for name in sorted(_suite_files())]


def load_suite(name_or_path: str) -> Suite:
    """A built-in suite by name, or a suite YAML file by path."""
    files = _suite_files()
    if name_or_path in files:
        text, origin = files[name_or_path].read_text(), name_or_path
    elif name_or_path.endswith((".yaml", ".yml")) and Path(name_or_path).is_file():
        path = Path(name_or_path)
        if path.stat().st_size > MAX_SUITE_BYTES:
            raise ConfigError(f"suite '{name_or_path}' is larger than {MAX_SUITE_BYTES // 1024} KiB: not a suite file")
        try:
            text, origin = path.read_text(encoding="utf-8"), name_or_path
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"suite '{name_or_path}' cannot be read: {exc}") from None
    else:
        import difflib

        close = difflib.get_close_matches(name_or_path, list(files), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(f"unknown suite '{name_or_path}'.{hint} Known suites: {', '.join(sorted(files))}.")
    data = parse_suite_yaml(text, origin)
    if not isinstance(data, dict):
        raise ConfigError(f"suite '{origin}' is not a mapping")
    return suite_from_dict(data, origin=origin)


def _same_kind(value: Any, default: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return isinstance(value, type(default))


def with_options(suite: Suite, overrides: dict[str, Any]) -> Suite:
    """``suite`` with some of its ``options`` replaced (``--suite-option KEY=VALUE``).

    Only keys the suite declares can be set, to a value of the declared type. The options
    are part of the suite's hash, so a result made with other options is never mistaken
    for one of the shipped suite."""
    if not overrides:
        return suite
    options = dict(suite.options)
    for key, value in overrides.items():
        if key not in options:
            known = ", ".join(sorted(options)) or "none"
            raise ConfigError(f"suite '{suite.name}' has no option '{key}' (options: {known})")
        default = options[key]
        if not _same_kind(value, default):
            raise ConfigError(f"suite '{suite.name}' option '{key}' must be a {type(default).__name__} "
                              f"like its default {default!r}, got {value!r}")
        options[key] = float(value) if isinstance(default, float) else value
    return dataclasses.replace(suite, options=options)
