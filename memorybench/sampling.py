"""The state of one sampling run that hooks and attention processors can read.

CFG batches are laid out ``[unconditional; conditional]``: a processor that must touch
only the conditional branch (e.g. cross-attention rescaling) uses ``cond_slice``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SamplingState:
    num_steps: int = 0
    step_index: int = -1  # -1 outside the denoising loop (e.g. during prompt optimisation)
    timestep: int = -1
    batch_size: int = 0  # images in the batch (the UNet sees 2x with CFG)
    cfg: bool = True

    @property
    def cond_slice(self) -> slice:
        return slice(self.batch_size, 2 * self.batch_size) if self.cfg else slice(0, self.batch_size)

    @property
    def uncond_slice(self) -> slice:
        return slice(0, self.batch_size) if self.cfg else slice(0, 0)
