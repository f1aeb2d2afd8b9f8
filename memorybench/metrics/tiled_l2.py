"""Tiled L2 distance of Carlini et al. 2023 ("Extracting training data from diffusion models").

Each image is split into a ``grid x grid`` array of non-overlapping tiles (default 4x4;
when the size is not divisible, tile edges are at ``floor(i * H / grid)``). For each tile
the distance is the RMS pixel difference::

    d_t(a, b) = sqrt( sum_{pixels p, channels c in tile t} (a[p,c] - b[p,c])^2 / |t| )

where pixels are floats in [0, 1] (uint8 input is divided by 255) and ``|t|`` is the
tile's element count (height * width * channels). The image distance is the maximum over
tiles, so one tile that differs is enough to make two images far apart.

Scale: the distance lies in [0, 1]; identical images give 0, an image that differs from
another by a constant ``delta`` (in [0, 1] units) in one tile and nowhere else gives
``delta``. Multiply by 255 for the same quantity on 0-255 pixels. (Seed 001's threshold
"50.0 on its own scale" is *not* on this scale; the extraction attack converts.)

Computation: pairwise distances use ``||a_t||^2 + ||b_t||^2 - 2 a_t . b_t`` per tile as
a matrix product in float64 torch, chunked over both image sets so memory stays bounded
by ``max_bytes``; never a Python loop over pairs. For uint8 input the arithmetic is done on
integer pixel values, where float64 is exact, so identical images give exactly 0.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

DEFAULT_GRID = 4
DEFAULT_MAX_BYTES = 256 * 1024 * 1024


def _to_tensor(x) -> tuple[torch.Tensor, bool]:
    """(N, H, W, C) tensor and whether the input was uint8 (integer pixel values)."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    if t.ndim == 3:
        t = t.unsqueeze(0)
    if t.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {tuple(t.shape)}")
    is_int = t.dtype == torch.uint8
    if not is_int and not t.is_floating_point():
        raise ValueError(f"images must be uint8 or float in [0, 1], got dtype {t.dtype}")
    return t, is_int


def _grid(grid) -> tuple[int, int]:
    if isinstance(grid, int):
        return grid, grid
    gh, gw = grid
    return int(gh), int(gw)


def tile_bounds(h: int, w: int, grid=DEFAULT_GRID) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of every tile, row-major."""
    gh, gw = _grid(grid)
    if not (1 <= gh <= h and 1 <= gw <= w):
        raise ValueError(f"grid {gh}x{gw} does not fit images of {h}x{w}")
    ys = [(i * h) // gh for i in range(gh + 1)]
    xs = [(j * w) // gw for j in range(gw + 1)]
    return [(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(gh) for j in range(gw)]


def _tiles(x: torch.Tensor, bounds, device) -> list[torch.Tensor]:
    """Per tile a float64 (n, D_t) matrix of raw pixel values."""
    x = x.to(device=device, dtype=torch.float64)
    return [x[:, y0:y1, x0:x1, :].reshape(x.shape[0], -1) for (y0, y1, x0, x1) in bounds]


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for s in range(0, n, size):
        yield s, min(n, s + size)


def tiled_l2_pairwise(
    a,
    b=None,
    grid=DEFAULT_GRID,
    chunk: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    device: str | torch.device = "cpu",
):
    """All-pairs tiled L2 distance, (N, M); ``b=None`` means ``a`` against itself.

    ``a``, ``b``: (N, H, W, C) uint8 or float in [0, 1], numpy or torch (both the same
    kind of pixels). Returns a numpy float64 array for numpy input, a torch tensor for
    torch input. ``chunk``: rows of ``a`` (and of ``b``) processed at once; by default
    derived from ``max_bytes``.
    """
    return_torch = isinstance(a, torch.Tensor)
    ta, a_int = _to_tensor(a)
    if b is None:
        tb, b_int = ta, a_int
    else:
        tb, b_int = _to_tensor(b)
    if a_int != b_int:
        raise ValueError("a and b must both be uint8 or both float in [0, 1]")
    if ta.shape[1:] != tb.shape[1:]:
        raise ValueError(f"image shapes differ: {tuple(ta.shape[1:])} vs {tuple(tb.shape[1:])}")
    n, h, w, c = ta.shape
    m = tb.shape[0]
    bounds = tile_bounds(h, w, grid)
    sizes = torch.tensor([(y1 - y0) * (x1 - x0) * c for (y0, y1, x0, x1) in bounds], dtype=torch.float64)
    scale = 255.0**2 if a_int else 1.0
    denom = (sizes * scale).to(device)

    per_image_bytes = h * w * c * 8
    if chunk is None:
        # an (ca, cb) block holds: float64 tiles of both chunks, a (ca, cb) product and max
        # roughly 1/4 of the budget each for: a's tiles, b's tiles, a product, the max
        by_products = int((max_bytes / (4 * 8)) ** 0.5)
        by_images = int(max_bytes // (4 * per_image_bytes))
        chunk = max(1, min(by_products, by_images))
    out = torch.empty((n, m), dtype=torch.float64)
    for b0, b1 in _chunks(m, chunk):
        tb_tiles = _tiles(tb[b0:b1], bounds, device)
        b_sq = [t.square().sum(dim=1) for t in tb_tiles]
        for a0, a1 in _chunks(n, chunk):
            ta_tiles = _tiles(ta[a0:a1], bounds, device)
            best = None
            for k, (at, bt) in enumerate(zip(ta_tiles, tb_tiles)):
                sq = at.square().sum(dim=1)[:, None] + b_sq[k][None, :] - 2.0 * (at @ bt.T)
                d = sq.clamp_(min=0.0).div_(denom[k])
                best = d if best is None else torch.maximum(best, d, out=best)
            out[a0:a1, b0:b1] = best.sqrt_().cpu()
    return out if return_torch else out.numpy()


def tiled_l2_paired(
    a,
    b,
    grid=DEFAULT_GRID,
    chunk: int = 1024,
    device: str | torch.device = "cpu",
):
    """Tiled L2 distance of matching pairs ``(a[i], b[i])``, shape (N,)."""
    return_torch = isinstance(a, torch.Tensor)
    ta, a_int = _to_tensor(a)
    tb, b_int = _to_tensor(b)
    if a_int != b_int:
        raise ValueError("a and b must both be uint8 or both float in [0, 1]")
    if ta.shape != tb.shape:
        raise ValueError(f"paired images must have equal shapes: {tuple(ta.shape)} vs {tuple(tb.shape)}")
    n, h, w, c = ta.shape
    bounds = tile_bounds(h, w, grid)
    scale = 255.0**2 if a_int else 1.0
    out = torch.empty(n, dtype=torch.float64)
    for s0, s1 in _chunks(n, chunk):
        diff = ta[s0:s1].to(device=device, dtype=torch.float64) - tb[s0:s1].to(device=device, dtype=torch.float64)
        diff = diff.square_()
        per_tile = torch.stack(
            [diff[:, y0:y1, x0:x1, :].mean(dim=(1, 2, 3)) for (y0, y1, x0, x1) in bounds], dim=1
        )
        out[s0:s1] = (per_tile / scale).amax(dim=1).sqrt().cpu()
    return out if return_torch else out.numpy()


__all__ = ["tiled_l2_pairwise", "tiled_l2_paired", "tile_bounds", "DEFAULT_GRID"]
