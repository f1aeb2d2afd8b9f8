"""Smoke runs: a suite shrunk from the command line to try a real model in minutes.

``--limit-prompts N``, ``--seeds N``, ``--steps N`` and ``--resolution PX`` shrink a suite
without writing a YAML file. The shrunk suite is a different suite: the overrides are
stored in its options under ``smoke`` (so its hash changes and the result says how it was
shrunk), the suite's full-size checks (such as ``prompt_count``) give way, and a result made
this way cannot be published to a leaderboard.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from memorybench.errors import ConfigError
from memorybench.suites.spec import Suite

SMOKE_OPTION = "smoke"
# suite options that hold a run to the suite's full size; a smoke run lifts them
FULL_SIZE_CHECKS = ("prompt_count",)


@dataclass(frozen=True)
class SmokeOverrides:
    limit_prompts: int | None = None  # first N prompts of every prompt set
    seeds: int | None = None  # seeds per prompt
    steps: int | None = None  # sampler steps
    resolution: int | None = None  # height and width in pixels

    def __post_init__(self) -> None:
        for flag, value in self.flags().items():
            if value < 1:
                raise ConfigError(f"{flag} must be >= 1, got {value}")

    def flags(self) -> dict[str, int]:
        """The flags given, as the command line spells them."""
        names = {"limit_prompts": "--limit-prompts", "seeds": "--seeds", "steps": "--steps",
                 "resolution": "--resolution"}
        return {names[k]: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def __bool__(self) -> bool:
        return bool(self.flags())


def apply_smoke(suite: Suite, smoke: SmokeOverrides | None) -> Suite:
    """``suite`` shrunk by ``smoke`` (unchanged when no flag is given)."""
    if not smoke:
        return suite
    sets = []
    for ps in suite.prompt_sets:
        limit = ps.limit
        if smoke.limit_prompts is not None:
            limit = smoke.limit_prompts if limit is None else min(limit, smoke.limit_prompts)
        sets.append(dataclasses.replace(ps, limit=limit, seeds=smoke.seeds or ps.seeds))
    sampler = suite.sampler
    if smoke.steps is not None:
        sampler = dataclasses.replace(sampler, steps=smoke.steps)
    if smoke.resolution is not None:
        sampler = dataclasses.replace(sampler, height=smoke.resolution, width=smoke.resolution)
    options: dict[str, Any] = {k: (None if k in FULL_SIZE_CHECKS else v) for k, v in suite.options.items()}
    options[SMOKE_OPTION] = {k.lstrip("-"): v for k, v in smoke.flags().items()}
    return dataclasses.replace(suite, prompt_sets=tuple(sets), sampler=sampler, options=options)


def smoke_of(suite: Suite) -> dict[str, int] | None:
    """The smoke flags a suite was shrunk with, or None for a full-size suite."""
    return suite.options.get(SMOKE_OPTION)


__all__ = ["SmokeOverrides", "apply_smoke", "smoke_of", "SMOKE_OPTION", "FULL_SIZE_CHECKS"]
