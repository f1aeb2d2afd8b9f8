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
``delta``. Multiply by 255 for the same quantity on 0-255 pixels. (Chavhan et al.'s threshold
"50.0 on its own scale" is *not* on this scale; the extraction attack converts.)

Computation: pairwise distances use ``||a_t||^2 + ||b_t||^2 - 2 a_t . b_t`` per tile as
one batched matrix product over all tiles in torch, chunked over both image sets so memory
stays bounded by ``max_bytes``; never a Python loop over pairs. For uint8 input the
arithmetic is done on centred integer pixel values (``v - 128``), where the products are
exact (float32 for tiles of <= 1024 elements, float64 otherwise), so identical images
give exactly 0.
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


def _tile_stack(x: torch.Tensor, grid, is_int: bool, device) -> torch.Tensor:
    """(T, n, D) tile matrices for images whose size the grid divides.

    uint8 pixels become ``value - 128`` in float32 (exact integers in [-128, 127]) so that
    tile dot products stay exact in float32 while ``D * 128**2 <= 2**24``; float pixels
    become float64.
    """
    gh, gw = _grid(grid)
    n, h, w, c = x.shape
    x = x.to(device)
    x = x.to(torch.float32).sub_(128.0) if is_int else x.to(torch.float64)
    x = x.reshape(n, gh, h // gh, gw, w // gw, c).permute(1, 3, 0, 2, 4, 5)
    return x.reshape(gh * gw, n, (h // gh) * (w // gw) * c)


def _tile_list(x: torch.Tensor, bounds, is_int: bool, device) -> list[torch.Tensor]:
    """Per tile an (n, D_t) matrix (any grid), float64."""
    x = x.to(device=device, dtype=torch.float64)
    if is_int:
        x = x - 128.0
    return [x[:, y0:y1, x0:x1, :].reshape(x.shape[0], -1) for (y0, y1, x0, x1) in bounds]


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for s in range(0, n, size):
        yield s, min(n, s + size)


_EXACT_F32_MAX_D = 2**24 // 128**2  # 1024 elements per tile


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
    derived from ``max_bytes`` (a soft bound on the working memory).

    When the grid divides the image size, all tiles go through one batched matrix product
    (``torch.baddbmm``); uint8 tiles of at most 1024 elements (e.g. 16x16x3) use float32,
    which is exact for centred integer pixels while squared tile sums stay below 2**24
    (distances below 0.58; above, within one float32 ulp, < 1e-7 in distance), and
    everything else float64.
    """
    return_torch = isinstance(a, torch.Tensor)
    ta, a_int = _to_tensor(a)
    same = b is None
    if same:
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
    n_tiles = len(bounds)
    gh, gw = _grid(grid)
    divisible = h % gh == 0 and w % gw == 0
    tile_d = (h // gh) * (w // gw) * c
    sizes = torch.tensor([(y1 - y0) * (x1 - x0) * c for (y0, y1, x0, x1) in bounds], dtype=torch.float64)
    scale = 255.0**2 if a_int else 1.0
    denom = (sizes * scale).to(device)

    per_image_bytes = h * w * c * 8
    if chunk is None:
        # the (T, ca, cb) products (float32 + float64) and both chunks' tiles share the budget
        by_products = int((max_bytes / 2 / (n_tiles * 12)) ** 0.5)
        by_images = int(max_bytes // (4 * per_image_bytes))
        chunk = max(1, min(by_products, by_images))
    out = torch.empty((n, m), dtype=torch.float64)

    if divisible:
        f32 = a_int and tile_d <= _EXACT_F32_MAX_D
        for b0, b1 in _chunks(m, chunk):
            tb_t = _tile_stack(tb[b0:b1], grid, b_int, device)  # (T, cb, D)
            if not f32:
                tb_t = tb_t.double()
            tb_t = tb_t.contiguous()
            b_sq = tb_t.square().sum(dim=2)  # exact integers (float32 below 2**24)
            for a0, a1 in _chunks(n, chunk):
                if same and (a0, a1) == (b0, b1):
                    ta_t, a_sq = tb_t, b_sq
                else:
                    ta_t = _tile_stack(ta[a0:a1], grid, a_int, device)
                    ta_t = (ta_t if f32 else ta_t.double()).contiguous()
                    a_sq = ta_t.square().sum(dim=2)
                if f32 and float(a_sq.max()) + float(b_sq.max()) <= 2.0**24:
                    # one fused float32 pass: ||a||^2 + ||b||^2 - 2 a.b, exact while the
                    # result is below 2**24 (distance < 0.58), within 1 ulp above
                    sq = torch.baddbmm(a_sq[:, :, None] + b_sq[:, None, :], ta_t, tb_t.transpose(1, 2),
                                       beta=1.0, alpha=-2.0).amax(dim=0).double()
                else:
                    prod = torch.bmm(ta_t, tb_t.transpose(1, 2)).double()  # (T, ca, cb)
                    sq = prod.mul_(-2.0).add_(a_sq.double()[:, :, None]).add_(b_sq.double()[:, None, :])
                    sq = sq.amax(dim=0)
                # all tiles have the same size here, so max and division commute
                out[a0:a1, b0:b1] = sq.clamp_(min=0.0).div_(denom[0]).sqrt_().cpu()
        return out if return_torch else out.numpy()

    for b0, b1 in _chunks(m, chunk):
        tb_tiles = _tile_list(tb[b0:b1], bounds, b_int, device)
        b_sq = [t.square().sum(dim=1) for t in tb_tiles]
        for a0, a1 in _chunks(n, chunk):
            ta_tiles = _tile_list(ta[a0:a1], bounds, a_int, device)
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
