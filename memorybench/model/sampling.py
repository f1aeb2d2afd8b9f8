"""The state of one sampling run that hooks and attention processors can read.

CFG batches are laid out ``[unconditional; conditional]``: a processor that must touch
only the conditional branch (e.g. cross-attention rescaling) uses ``cond_slice``. The
batch's prompts and seeds are there too, so a processor that needs them (e.g. to mask
padding tokens) reads them here instead of capturing them through another hook.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from memorybench.errors import ConfigError

SAMPLERS = {
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "dpmsolver": "DPMSolverMultistepScheduler",
    "euler": "EulerDiscreteScheduler",
}


MAX_STEPS = 1000  # the training timesteps of Stable Diffusion 1.x/2.x/XL and of the tiny world


@dataclass(frozen=True)
class SamplerSettings:
    sampler: str = "ddim"
    steps: int = 25
    guidance: float = 7.5
    height: int = 64
    width: int = 64

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler '{self.sampler}': choose one of {', '.join(SAMPLERS)}")
        if not 1 <= self.steps <= MAX_STEPS:
            raise ConfigError(f"steps must be in [1, {MAX_STEPS}] (a sampler step per training timestep at "
                              f"most), got {self.steps}")
        if not math.isfinite(self.guidance):
            raise ConfigError(f"guidance must be a finite number, got {self.guidance}")


def seed_range(count: int, offset: int = 0) -> list[int]:
    """The noise seeds ``offset .. offset + count - 1``: how suites and detectors pick seeds."""
    return list(range(offset, offset + count))


@dataclass
class SamplingState:
    num_steps: int = 0
    step_index: int = -1  # -1 outside the denoising loop (e.g. during prompt optimisation)
    timestep: int = -1
    batch_size: int = 0  # images in the batch (the UNet sees 2x with CFG)
    cfg: bool = True
    prompts: list[str] = field(default_factory=list)  # one per image of the batch
    seeds: list[int] = field(default_factory=list)

    def begin(self, prompts: list[str], seeds: list[int], num_steps: int) -> None:
        """A new CFG batch: its prompts and seeds, outside the loop until the first step."""
        self.num_steps, self.batch_size, self.cfg = num_steps, len(prompts), True
        self.prompts, self.seeds = list(prompts), list(seeds)
        self.step_index, self.timestep = -1, -1

    def end(self) -> None:
        self.step_index, self.timestep = -1, -1

    @property
    def cond_slice(self) -> slice:
        return slice(self.batch_size, 2 * self.batch_size) if self.cfg else slice(0, self.batch_size)

    @property
    def uncond_slice(self) -> slice:
        return slice(0, self.batch_size) if self.cfg else slice(0, 0)
