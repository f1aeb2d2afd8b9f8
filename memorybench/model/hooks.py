"""Installing cross-attention processors for a block of code, and putting the old ones back.

Methods (through their ``attention_processors`` hook) and detectors (to read attention maps)
both swap processors on the UNet's cross-attention (``.attn2.``) keys; both go through
``installed_processors``, so a processor left behind by an exception is impossible and the
originals come back as the very same objects.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Iterator

from memorybench.errors import ConfigError

if TYPE_CHECKING:
    from memorybench.model.pipeline import PipelineAdapter


@contextlib.contextmanager
def installed_processors(pipe: "PipelineAdapter", processors: dict[str, Any] | None,
                         owner: str = "plugin") -> Iterator[None]:
    """Install ``processors`` (cross-attention keys only) for the block; restore on exit.

    The processors present on entry are snapshot first, so whatever the block does to
    the UNet's processors (even outside this call) is undone when it ends."""
    unet = pipe.unet
    saved = dict(unet.attn_processors)
    processors = processors or {}
    bad = [k for k in processors if ".attn2." not in k or k not in saved]
    if bad:
        raise ConfigError(f"{owner} set processors on non-cross-attention keys: {bad[:3]}")
    try:
        if processors:
            unet.set_attn_processor({**saved, **processors})  # diffusers pops from the dict
        yield
    finally:
        unet.set_attn_processor(dict(saved))
