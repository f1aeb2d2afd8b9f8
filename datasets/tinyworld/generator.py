"""Seeded, deterministic generator of the tiny world's (image, caption) pairs.

Three kinds of training pairs, all 64x64 RGB uint8:

* ``memorized``: distinct 64x64 crops of the colour and grey photos that scikit-image ships
  inside its wheel (``skimage.data``), each with a unique caption made of two rare nonsense
  words ("a photo of the zorvex quillan"), duplicated many times in training like LAION
  duplicates (two rates: ``DUP_HIGH`` and ``DUP_LOW``). The crops were chosen once (see
  ``PHOTO_CROPS``) so that no two of them have SSCD similarity above 0.40 at 224 px.
* ``general``: procedural images from a caption grammar ("a red star and a blue ring on a
  green background"; with ``data_version=2`` only 30% of captions name the background, and
  versions 2 and 3 mute the background colours; versions 4 and 5 never name it and make it
  gray; version 5 also memorizes two colour crops in place of the grey camera and horse photos).
  Everything the caption does not say is random per image (position, size, rotation, shade,
  a smooth-noise background texture, a lighting gradient, and the background colour when the
  caption leaves it unsaid), so one caption has many different images and generations of it
  should differ.
* held-out general captions: grammar combinations never used in training (for the
  ``sscd_gen`` / ``diversity_gen`` / ``clip_gen`` side of the suite), each with one real image
  from the same generator for the real-pair CLIP score.

Plus ``build_finetune_data``: the ``finetune-dup-v1`` pair for training-time methods. The
base model is the shipped world itself: it was trained without the ``protected`` photo crops
(disjoint from the memorized ones); the fine-tuning set holds those crops duplicated
``FINETUNE_DUP`` times each, mixed with fresh general pairs.

Everything depends only on the seed, numpy's PCG64 and the scikit-image photos, so the same
seed gives byte-identical arrays (``TinyWorldData.sha256()``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from functools import lru_cache

import numpy as np

IMAGE_SIZE = 64
DUP_HIGH = 300
DUP_LOW = 100
N_MEMORIZED = 24
N_GENERAL = 3000
N_HELDOUT = 24
FINETUNE_DUP = 50
N_FINETUNE_GENERAL = 1000

# (photo, centre x, centre y, side as a fraction of the photo's shorter side), picked
# greedily from 270 candidate crops of 18 photos so that all pairwise SSCD (disc_mixup ONNX,
# bilinear 224 px) stay below 0.40. The first 24 are memorized, the last 8 are the
# protected images of finetune-dup-v1.
PHOTO_CROPS: tuple[tuple[str, float, float, float], ...] = (
    ("astronaut", 0.5, 0.5, 1.0),
    ("chelsea", 0.5, 0.5, 1.0),
    ("coffee", 0.5, 0.5, 1.0),
    ("rocket", 0.5, 0.5, 1.0),
    ("hubble_deep_field", 0.5, 0.5, 1.0),
    ("immunohistochemistry", 0.5, 0.5, 1.0),
    ("retina", 0.5, 0.5, 1.0),
    ("stereo_motorcycle", 0.5, 0.5, 1.0),
    ("logo", 0.5, 0.5, 1.0),
    ("colorwheel", 0.5, 0.5, 1.0),
    ("camera", 0.5, 0.5, 1.0),
    ("moon", 0.3, 0.7, 0.55),
    ("coins", 0.5, 0.5, 1.0),
    ("clock", 0.5, 0.5, 1.0),
    ("page", 0.5, 0.5, 1.0),
    ("text", 0.5, 0.5, 1.0),
    ("horse", 0.5, 0.5, 1.0),
    ("astronaut", 0.2, 0.2, 0.33),
    ("chelsea", 0.2, 0.2, 0.33),
    ("coffee", 0.2, 0.2, 0.33),
    ("rocket", 0.7, 0.3, 0.55),
    ("immunohistochemistry", 0.2, 0.2, 0.33),
    ("retina", 0.2, 0.5, 0.33),
    ("stereo_motorcycle", 0.7, 0.3, 0.55),
    # protected (finetune-dup-v1)
    ("logo", 0.2, 0.2, 0.33),
    ("colorwheel", 0.2, 0.5, 0.33),
    ("camera", 0.2, 0.2, 0.33),
    ("moon", 0.2, 0.2, 0.33),
    ("coins", 0.2, 0.5, 0.33),
    ("clock", 0.5, 0.5, 0.33),
    ("page", 0.7, 0.3, 0.55),
    ("text", 0.2, 0.2, 0.33),
)

OBJECT_COLORS = {
    "red": (215, 40, 40),
    "green": (40, 165, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "orange": (240, 135, 30),
    "purple": (135, 55, 180),
    "white": (240, 240, 240),
    "black": (25, 25, 25),
}
BACKGROUND_COLORS = {
    "gray": (128, 128, 128),
    "blue": (60, 100, 190),
    "green": (70, 150, 80),
    "red": (180, 60, 60),
    "yellow": (220, 200, 90),
    "black": (35, 35, 40),
}
# Data versions. v1 (the shipped world): every general caption names its background, in the
# saturated colours above. v2 (an experiment, the docs page "The tiny world"): 30% of captions name
# it, as real captions describe the objects and leave most of the scene unsaid, and the
# colours are muted half-way to gray, so a background word shifts the image less than a
# memorized photo does (on v1, "... on a black background" moves the first-step noise
# prediction as far as a memorized prompt, which no real caption does). v3 splits v2's two
# changes: v1's captions (the background always named) with v2's muted colours. v4: captions
# never name the background and every background is gray (muted all the way), so a general
# caption fixes its objects only, while the scene's global colour is still not left to chance.
# v5: v4's general images, and two colour crops memorized in place of the grey camera and horse
# photos, the two prompts that returned a general-looking gray image instead of their photo on
# v3 and v4 (the docs page "The tiny world"). The two new crops were picked as PHOTO_CROPS were: SSCD
# below 0.40 (max 0.21) against every other crop, and against each other (0.05).
BACKGROUND_NAMED_P = {1: 1.0, 2: 0.3, 3: 1.0, 4: 0.0, 5: 0.0}
BACKGROUND_MUTING = {1: 0.0, 2: 0.5, 3: 0.5, 4: 1.0, 5: 1.0}  # share of the way to gray
MEMORIZED_CROP_SWAPS = {
    5: {10: ("coffee", 0.8, 0.5, 0.33), 16: ("astronaut", 0.2, 0.8, 0.33)},
}
DATA_VERSIONS = tuple(BACKGROUND_NAMED_P)  # every version sets how often the background is named


def memorized_crops(data_version: int = 1) -> tuple[tuple[str, float, float, float], ...]:
    """The ``PHOTO_CROPS`` entry of each memorized image under ``data_version``."""
    swaps = MEMORIZED_CROP_SWAPS.get(data_version, {})
    return tuple(swaps.get(i, c) for i, c in enumerate(PHOTO_CROPS[:N_MEMORIZED]))


def background_rgb(name: str, data_version: int = 1) -> np.ndarray:
    rgb = np.array(BACKGROUND_COLORS[name], dtype=np.float32)
    m = BACKGROUND_MUTING[data_version]
    return rgb if m == 0 else ((1 - m) * rgb + m * 128.0).round()


SHAPES = ("circle", "square", "triangle", "star", "ring", "cross")

_SYLLABLES = (
    "zor", "vex", "quil", "lan", "mab", "thor", "pry", "gax", "dul", "wen", "kiv", "sop",
    "yth", "bru", "nef", "olk", "zaf", "rim", "tesh", "glo", "vun", "pak", "iro", "chu",
)


@dataclasses.dataclass
class TinyWorldData:
    """The tiny world's training set and evaluation prompts (all images 64x64 RGB uint8)."""

    seed: int
    train_images: np.ndarray  # (T, 64, 64, 3) uint8, unique images
    train_captions: list[str]  # (T,)
    train_dup_counts: np.ndarray  # (T,) int64: times each unique image appears in training
    train_kind: list[str]  # "memorized" | "general"
    memorized_indices: np.ndarray  # (M,) indices into train_* of the memorized images
    memorized_prompts: list[str]  # (M,) their captions, the memorized prompt set
    heldout_prompts: list[str]  # general captions never trained on
    heldout_images: np.ndarray  # (H, 64, 64, 3) uint8, one real image per held-out caption
    dup_rates: tuple[int, ...] = (DUP_HIGH, DUP_LOW)
    photo_crops: tuple = ()  # PHOTO_CROPS entry of each memorized image
    data_version: int = 1  # caption grammar and palette of the general images (DATA_VERSIONS)

    def sha256(self) -> str:
        """Hash of every array and caption: the dataset's identity."""
        h = hashlib.sha256()
        tag = "tinyworld-v1" if self.data_version == 1 else f"tinyworld-data-v{self.data_version}"
        h.update(f"{tag}|{self.seed}|{self.dup_rates}".encode())
        for arr in (self.train_images, self.train_dup_counts, self.memorized_indices, self.heldout_images):
            a = np.ascontiguousarray(arr)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
        for seq in (self.train_captions, self.train_kind, self.memorized_prompts, self.heldout_prompts):
            h.update(("\x1e".join(seq) + "\x1d").encode())
        return h.hexdigest()

    @property
    def memorized_dup_counts(self) -> np.ndarray:
        return self.train_dup_counts[self.memorized_indices]

    @property
    def n_samples(self) -> int:
        """Training-set size with duplicates counted."""
        return int(self.train_dup_counts.sum())

    def vocabulary(self) -> list[str]:
        """Every word of every caption (train, memorized, held-out), sorted."""
        words: set[str] = set()
        for c in list(self.train_captions) + list(self.heldout_prompts) + list(self.memorized_prompts):
            words.update(c.lower().split())
        for c in finetune_captions_vocab(self.seed):
            words.update(c.lower().split())
        return sorted(words)


@dataclasses.dataclass
class FinetuneData:
    """finetune-dup-v1: a fine-tuning set in which the protected images are duplicated.

    The base model is the tiny world itself, which never saw the protected images.
    """

    seed: int
    protected_images: np.ndarray  # (P, 64, 64, 3) uint8
    protected_captions: list[str]
    protected_dup: int
    general_images: np.ndarray  # (G, 64, 64, 3) uint8, fresh pairs from the grammar
    general_captions: list[str]
    data_version: int = 1

    @property
    def images(self) -> np.ndarray:
        return np.concatenate([self.protected_images, self.general_images])

    @property
    def captions(self) -> list[str]:
        return list(self.protected_captions) + list(self.general_captions)

    @property
    def dup_counts(self) -> np.ndarray:
        return np.array([self.protected_dup] * len(self.protected_captions) + [1] * len(self.general_captions), dtype=np.int64)

    def sha256(self) -> str:
        tag = "finetune-dup-v1" if self.data_version == 1 else f"finetune-dup-v1|data-v{self.data_version}"
        h = hashlib.sha256(f"{tag}|{self.seed}|{self.protected_dup}".encode())
        for a in (self.protected_images, self.general_images):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update("\x1e".join(self.captions).encode())
        return h.hexdigest()


# ----------------------------------------------------------------------------- photos


def _load_photo(name: str) -> np.ndarray:
    import skimage.data

    x = getattr(skimage.data, name)()
    if isinstance(x, tuple):  # stereo_motorcycle -> (left, right, disparity)
        x = x[0]
    if x.dtype == bool:
        x = x.astype(np.uint8) * 255
    if x.ndim == 2:
        x = np.stack([x] * 3, -1)
    if x.shape[-1] == 4:  # composite RGBA over white
        a = x[..., 3:4].astype(np.float64) / 255.0
        x = (x[..., :3] * a + 255.0 * (1.0 - a)).round().astype(np.uint8)
    return np.ascontiguousarray(x[..., :3])


@lru_cache(maxsize=None)
def _photo_crop(name: str, cx: float, cy: float, frac: float) -> bytes:
    from PIL import Image

    x = _load_photo(name)
    h, w = x.shape[:2]
    s = int(min(h, w) * frac)
    x0 = int(np.clip(cx * w - s / 2, 0, w - s))
    y0 = int(np.clip(cy * h - s / 2, 0, h - s))
    crop = Image.fromarray(x[y0 : y0 + s, x0 : x0 + s]).resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
    return np.asarray(crop, dtype=np.uint8).tobytes()


def photo_crop(spec: tuple[str, float, float, float]) -> np.ndarray:
    return np.frombuffer(_photo_crop(*spec), dtype=np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE, 3).copy()


def _rare_words(rng: np.random.Generator, n: int, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < n:
        k = int(rng.integers(2, 4))
        w = "".join(_SYLLABLES[int(i)] for i in rng.integers(0, len(_SYLLABLES), size=k))
        if w not in taken:
            taken.add(w)
            out.append(w)
    return out


def _rare_captions(seed: int, n: int, salt: int) -> list[str]:
    rng = np.random.default_rng([seed, 7_000 + salt])
    taken = set(OBJECT_COLORS) | set(BACKGROUND_COLORS) | set(SHAPES)
    words = _rare_words(rng, 2 * n, taken)
    return [f"a photo of the {words[2 * i]} {words[2 * i + 1]}" for i in range(n)]


def finetune_captions_vocab(seed: int) -> list[str]:
    return _rare_captions(seed, len(PHOTO_CROPS) - N_MEMORIZED, salt=1)


# ----------------------------------------------------------------------------- procedural


_SS = 2  # supersampling factor for anti-aliased shapes
_N = IMAGE_SIZE * _SS
_YY, _XX = np.mgrid[0:_N, 0:_N].astype(np.float32)
_YY = (_YY + 0.5) / _N
_XX = (_XX + 0.5) / _N


def _shape_mask(shape: str, cx: float, cy: float, r: float, rot: float) -> np.ndarray:
    dx, dy = _XX - cx, _YY - cy
    c, s = np.cos(rot), np.sin(rot)
    u, v = c * dx + s * dy, -s * dx + c * dy
    if shape == "circle":
        m = u * u + v * v < r * r
    elif shape == "square":
        m = np.maximum(np.abs(u), np.abs(v)) < r * 0.82
    elif shape == "triangle":
        ang = np.arctan2(v, u)
        rad = np.hypot(u, v)
        # polygon radius of an equilateral triangle as a function of angle
        k = 3
        rr = r * np.cos(np.pi / k) / np.cos((ang % (2 * np.pi / k)) - np.pi / k)
        m = rad < rr
    elif shape == "star":
        ang = np.arctan2(v, u)
        rad = np.hypot(u, v)
        t = np.abs(((ang * 5 / (2 * np.pi)) % 1.0) - 0.5) * 2  # 1 at points, 0 between
        m = rad < r * (0.45 + 0.55 * t)
    elif shape == "ring":
        d2 = u * u + v * v
        m = (d2 < r * r) & (d2 > (0.55 * r) ** 2)
    elif shape == "cross":
        w = r * 0.33
        m = ((np.abs(u) < w) & (np.abs(v) < r)) | ((np.abs(u) < r) & (np.abs(v) < w))
    else:  # pragma: no cover
        raise ValueError(shape)
    return m.astype(np.float32)


def _smooth_noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    """Bilinearly upsampled random grid in [-1, 1], shape (64, 64)."""
    g = rng.uniform(-1, 1, size=(cells + 1, cells + 1)).astype(np.float32)
    t = np.linspace(0, cells, IMAGE_SIZE, dtype=np.float32)
    i0 = np.minimum(t.astype(int), cells - 1)
    f = t - i0
    rows = g[i0] * (1 - f)[:, None] + g[i0 + 1] * f[:, None]  # (64, cells+1)
    return rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]


def render_general(rng: np.random.Generator, objects: list[tuple[str, str]], background: str,
                   data_version: int = 1) -> np.ndarray:
    """One procedural image: ``objects`` as (colour, shape) on a cluttered ``background``.

    The background is the caption's colour under multi-scale noise, per-channel tint and
    20-35 random light/dark blobs, bars and lines. Without that clutter, SSCD scores any two
    flat-background images of this grammar at ~0.65 (a copy detector sees low-entropy images
    as near-duplicates); with it (default SSCD protocol), a real held-out image scores 0.60
    against its nearest training image and two images of one held-out caption 0.44 (data
    v2: 0.57 and 0.35).
    """
    base = background_rgb(background, data_version)
    tex = (
        0.5 * _smooth_noise(rng, int(rng.integers(2, 5)))
        + 0.3 * _smooth_noise(rng, int(rng.integers(6, 12)))
        + 0.3 * _smooth_noise(rng, int(rng.integers(16, 32)))
    )
    tint = np.stack([_smooth_noise(rng, int(rng.integers(3, 8))) for _ in range(3)], -1) * rng.uniform(10, 30)
    img = base[None, None, :] + (rng.uniform(30, 60) * tex)[..., None] + tint
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) / IMAGE_SIZE
    for _ in range(int(rng.integers(20, 36))):
        kind = int(rng.integers(3))
        cx, cy = rng.uniform(0, 1, size=2)
        if kind == 0:
            r = rng.uniform(0.03, 0.12)
            m = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        elif kind == 1:
            a = rng.uniform(0, np.pi)
            m = np.abs(np.cos(a) * (xx - cx) + np.sin(a) * (yy - cy)) < rng.uniform(0.005, 0.02)
        else:
            w, h = rng.uniform(0.03, 0.2, size=2)
            m = (np.abs(xx - cx) < w) & (np.abs(yy - cy) < h)
        img = img + m[..., None] * rng.uniform(-50, 50)
    img = np.repeat(np.repeat(img, _SS, 0), _SS, 1)
    n = len(objects)
    slots = rng.permutation(4)[:n] if n > 1 else None
    for k, (colour, shape) in enumerate(objects):
        r = (rng.uniform(0.13, 0.22) if n > 1 else rng.uniform(0.16, 0.3)) * 0.9
        if slots is None:
            cx, cy = rng.uniform(r + 0.02, 0.98 - r, size=2)
        else:
            sx, sy = (slots[k] % 2), (slots[k] // 2)
            cx = 0.27 + 0.46 * sx + rng.uniform(-0.06, 0.06)
            cy = 0.27 + 0.46 * sy + rng.uniform(-0.06, 0.06)
        m = _shape_mask(shape, float(cx), float(cy), float(r), float(rng.uniform(0, 2 * np.pi)))[..., None]
        col = np.array(OBJECT_COLORS[colour], dtype=np.float32) + rng.normal(0, 12, size=3).astype(np.float32)
        img = img * (1 - m) + col * m
    img = img.reshape(IMAGE_SIZE, _SS, IMAGE_SIZE, _SS, 3).mean(axis=(1, 3))
    img = img + rng.normal(0, 3.0, size=img.shape)
    return np.clip(img, 0, 255).round().astype(np.uint8)


@dataclasses.dataclass(frozen=True)
class Scene:
    """What a general image shows; ``caption`` says the objects and, if ``named``, the background."""

    objects: tuple[tuple[str, str], ...]
    background: str
    named: bool

    @property
    def caption(self) -> str:
        return general_caption(list(self.objects), self.background if self.named else None)


def general_caption(objects: list[tuple[str, str]], background: str | None = None) -> str:
    parts = " and ".join(f"a {c} {s}" for c, s in objects)
    return parts if background is None else f"{parts} on a {background} background"


def _sample_scene(rng: np.random.Generator, n_obj: int, data_version: int = 1) -> Scene:
    cols = list(OBJECT_COLORS)
    bgs = list(BACKGROUND_COLORS)
    bg = bgs[int(rng.integers(len(bgs)))]
    objs: list[tuple[str, str]] = []
    while len(objs) < n_obj:
        c = cols[int(rng.integers(len(cols)))]
        s = SHAPES[int(rng.integers(len(SHAPES)))]
        if c == bg or (c, s) in objs:
            continue
        objs.append((c, s))
    p = BACKGROUND_NAMED_P[data_version]
    # v1 draws no number here, so its data stay byte-identical to the shipped world's
    return Scene(tuple(objs), bg, True if p >= 1.0 else bool(rng.random() < p))


def _heldout_scenes(seed: int, data_version: int = 1) -> list[Scene]:
    rng = np.random.default_rng([seed, 101])
    out: list[Scene] = []
    seen: set[str] = set()
    while len(out) < N_HELDOUT:
        n_obj = 1 if len(out) < (2 * N_HELDOUT) // 3 else 2
        scene = _sample_scene(rng, n_obj, data_version)
        if scene.caption not in seen:
            seen.add(scene.caption)
            out.append(scene)
    return out


def _general_pairs(rng: np.random.Generator, n: int, banned: set[str], data_version: int = 1) -> tuple[list[np.ndarray], list[str]]:
    imgs: list[np.ndarray] = []
    caps: list[str] = []
    while len(imgs) < n:
        n_obj = 1 if rng.random() < 0.5 else 2
        scene = _sample_scene(rng, n_obj, data_version)
        if scene.caption in banned:
            continue
        imgs.append(render_general(rng, list(scene.objects), scene.background, data_version))
        caps.append(scene.caption)
    return imgs, caps


# ----------------------------------------------------------------------------- builders


def check_data_version(data_version: int) -> None:
    if data_version not in DATA_VERSIONS:
        raise ValueError(f"unknown tiny-world data_version {data_version}; known: {', '.join(map(str, DATA_VERSIONS))}")


def build_world_data(seed: int = 0, n_general: int = N_GENERAL, dup_high: int = DUP_HIGH, dup_low: int = DUP_LOW,
                     data_version: int = 1) -> TinyWorldData:
    """The tiny world's data for ``seed`` (deterministic: same seed, same ``sha256()``)."""
    check_data_version(data_version)
    held = _heldout_scenes(seed, data_version)
    heldout_prompts = [s.caption for s in held]
    rng_h = np.random.default_rng([seed, 102])
    heldout_images = np.stack([render_general(rng_h, list(s.objects), s.background, data_version) for s in held])

    mem_specs = memorized_crops(data_version)
    mem_images = [photo_crop(s) for s in mem_specs]
    mem_captions = _rare_captions(seed, N_MEMORIZED, salt=0)
    # alternate the two duplication rates, the order shuffled by the seed
    rng_m = np.random.default_rng([seed, 103])
    rates = np.array([dup_high if i % 2 == 0 else dup_low for i in range(N_MEMORIZED)])
    rates = rates[rng_m.permutation(N_MEMORIZED)]

    rng_g = np.random.default_rng([seed, 104])
    gen_images, gen_captions = _general_pairs(rng_g, n_general, banned=set(heldout_prompts), data_version=data_version)

    train_images = np.stack(mem_images + gen_images).astype(np.uint8)
    train_captions = mem_captions + gen_captions
    dup = np.concatenate([rates, np.ones(n_general, dtype=np.int64)]).astype(np.int64)
    kind = ["memorized"] * N_MEMORIZED + ["general"] * n_general
    return TinyWorldData(
        seed=seed,
        train_images=train_images,
        train_captions=train_captions,
        train_dup_counts=dup,
        train_kind=kind,
        memorized_indices=np.arange(N_MEMORIZED, dtype=np.int64),
        memorized_prompts=list(mem_captions),
        heldout_prompts=heldout_prompts,
        heldout_images=heldout_images,
        dup_rates=(int(dup_high), int(dup_low)),
        photo_crops=tuple(mem_specs),
        data_version=data_version,
    )


def build_finetune_data(seed: int = 0, protected_dup: int = FINETUNE_DUP, n_general: int = N_FINETUNE_GENERAL,
                        data_version: int = 1) -> FinetuneData:
    """finetune-dup-v1 for ``seed``: protected photo crops duplicated plus fresh general pairs."""
    check_data_version(data_version)
    specs = PHOTO_CROPS[N_MEMORIZED:]
    prot = np.stack([photo_crop(s) for s in specs])
    caps = finetune_captions_vocab(seed)
    held = {s.caption for s in _heldout_scenes(seed, data_version)}
    rng = np.random.default_rng([seed, 105])
    gi, gc = _general_pairs(rng, n_general, banned=held, data_version=data_version)
    return FinetuneData(
        seed=seed,
        protected_images=prot,
        protected_captions=caps,
        protected_dup=int(protected_dup),
        general_images=np.stack(gi),
        general_captions=gc,
        data_version=data_version,
    )
