"""A small picture of what a method generates for memorized prompts.

The report shows, for each method, its generations for the first few memorized prompts
beside the training image they copy. Generated images live in the generation cache of the
machine that ran, which a leaderboard reader does not have, so the run writes one small PNG
grid beside its result JSON and records the grid's sha256 in the result; ``publish`` copies
it into the leaderboard's folder under that hash and the report links it from there.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from memorybench.api.metric import RunView
    from memorybench.suites.data import SuiteData

GRID_PROMPTS = 4
GRID_SEEDS = 4
MAX_CELL_PX = 128  # SD's 512 px images shrink to this; the tiny world's 64 px stay as they are
GAP_PX = 4  # white gap between the training image column and the generations


def source_image(data: "SuiteData", prompt: str) -> np.ndarray | None:
    """The training image a memorized prompt copies, when the suite's data source knows it."""
    try:
        return data.source_image(prompt)
    except (AttributeError, IndexError, KeyError, OSError, TypeError, ValueError):
        return None  # a thumbnail is a courtesy: never fail a run over it


def _cell(image: np.ndarray, px: int) -> Image.Image:
    im = Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    return im if im.size == (px, px) else im.resize((px, px), Image.Resampling.LANCZOS)


def memorized_grid(view: "RunView", n_prompts: int = GRID_PROMPTS,
                   n_seeds: int = GRID_SEEDS) -> tuple[bytes, dict[str, Any]] | None:
    """PNG bytes and their description: rows = prompts, [training image |] seeds."""
    set_name = "memorized" if view.images.get("memorized") else next((k for k, v in view.images.items() if v), None)
    if set_name is None:
        return None
    prompts = list(view.images[set_name])[:n_prompts]
    seeds = list(view.data.seeds[set_name])[:n_seeds]
    sources = [source_image(view.data, p) for p in prompts]
    with_source = all(s is not None for s in sources)
    first = view.images[set_name][prompts[0]][0]
    px = min(max(first.shape[0], first.shape[1]), MAX_CELL_PX)
    left = px + GAP_PX if with_source else 0
    canvas = Image.new("RGB", (left + px * len(seeds), px * len(prompts)), "white")
    for row, prompt in enumerate(prompts):
        if with_source:
            canvas.paste(_cell(sources[row], px), (0, row * px))
        for col, image in enumerate(view.images[set_name][prompt][: len(seeds)]):
            canvas.paste(_cell(image, px), (left + col * px, row * px))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    meta = {"prompt_set": set_name, "prompts": prompts, "seeds": [int(s) for s in seeds],
            "source_column": with_source, "cell_px": int(px)}
    return buf.getvalue(), meta


def grid_file_name(result_path: Path) -> str:
    """``results/x/none-ab12cd34.json`` -> ``none-ab12cd34.grid.png`` (only safe characters)."""
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", Path(result_path).stem).lstrip("._-") or "result"
    return f"{stem[:180]}.grid.png"


def write_beside(result_path: str | Path, png: bytes, meta: dict[str, Any]) -> dict[str, Any]:
    """Write the grid next to the result file; the dict goes into the result as ``thumbnails``."""
    from memorybench.core.io import atomic_write_bytes

    result_path = Path(result_path)
    name = grid_file_name(result_path)
    atomic_write_bytes(result_path.parent / name, png)
    return {"file": name, "sha256": hashlib.sha256(png).hexdigest(), **meta}
