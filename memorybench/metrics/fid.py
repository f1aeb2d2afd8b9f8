"""FID and KID through torch-fidelity, with on-disk reference statistics.

Feature extractors are torch-fidelity ``FeatureExtractorBase`` classes created through its
registry (``torch_fidelity.utils.create_feature_extractor``); features are extracted by
``torch_fidelity.utils.get_featuresdict_from_dataset``, FID is
``torch_fidelity.metric_fid.fid_statistics_to_metric`` and KID
``torch_fidelity.metric_kid.kid_features_to_metric`` (the same functions
``torch_fidelity.calculate_metrics`` calls; a test checks the two agree). We call them
directly so that reference statistics can come from our own cache.

Extractors:

* ``tinyclip_extractor()``: the tiny world's CLIP image tower (registered in torch-fidelity
  as ``memorybench-tinyclip``); features = its 128-d image embedding before normalisation.
  The number is "FID in tiny-CLIP space", not comparable to Inception FID.
* ``inception_extractor(weights_path)``: torch-fidelity's ``inception-v3-compat`` (2048-d
  pool features) with weights from a local file; nothing is downloaded. The file is read
  once, by us, as a plain state dict (``torch.load(weights_only=True)``, or a
  ``.safetensors`` file); torch-fidelity's module is then built from that state dict handed
  over in memory, so torch-fidelity never unpickles the user's file (its own loader would,
  with ``weights_only=False``), and a file swapped after the check is never read.

Reference statistics (mu, sigma and the features, for KID) are cached as ``.npz`` under
``cache_dir/fid_ref/<key>.npz``; the key hashes the extractor name, feature layer, weights
sha256, the extractor's preprocessing, the image set's preprocessing/resolution, its size
and its content sha256. Files are written with their sha256 beside them
(``memorybench.core.io.write_checked``) and read with ``allow_pickle=False`` after that hash
is checked: a damaged file is named in a warning, removed and computed again.

KID: torch-fidelity's unbiased polynomial-kernel MMD averaged over ``kid_subsets`` random
subsets of ``kid_subset_size`` images of each set. Fewer images than the subset size is an
error (``DataError``) that says how many are needed: we never lower the subset size
silently; a caller that wants a smaller one passes it explicitly and it is recorded in the
protocol. The CI fields of ``kid_gen`` hold ``mean +- 1.96 x std`` of the per-subset
estimates (the normal 95% range of one subset's estimate, a conservative spread for the
mean; not a bootstrap CI); ``fid_gen`` has no CI.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from memorybench.errors import DataError, ModelError
from memorybench.core.hashing import sha256_file
from memorybench.core.io import read_checked, write_checked
from memorybench.metrics.base import MetricValue

TINYCLIP_NAME = "memorybench-tinyclip"
INCEPTION_NAME = "inception-v3-compat"
KEY_VERSION = "fid-ref-v1"
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DEFAULT_KID_SUBSETS = 100
DEFAULT_KID_SUBSET_SIZE = 1000  # torch-fidelity's default
DEFAULT_RNG_SEED = 2020  # torch-fidelity's default


# ----------------------------------------------------------------------------- extractors


def _sha256_state_dict(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def _tinyclip_class():
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase

    class TinyClipFeatureExtractor(FeatureExtractorBase):
        """The tiny world's CLIP image tower as a torch-fidelity feature extractor.

        Input: uint8 (N, 3, H, W); resized (bilinear, antialiased) to the model's input size
        when H, W differ, scaled to [0, 1] and normalised with the tiny CLIP's mean/std.
        Kwargs: ``feature_extractor_weights_path`` (the ``clip/`` folder; default the
        shipped world's) or ``tinyclip_model`` (an open_clip CLIP built in code).
        """

        def __init__(self, name, features_list, feature_extractor_weights_path=None, tinyclip_model=None, **kwargs):
            super().__init__(name, features_list)
            if tinyclip_model is None:
                from memorybench.tinyworld.clip import load_tiny_clip

                tinyclip_model, _, info = load_tiny_clip(feature_extractor_weights_path)
                mean, std = info["mean"], info["std"]
            else:
                from memorybench.tinyworld.clip import MEAN as mean, STD as std
            self.visual = tinyclip_model.visual
            size = self.visual.image_size
            self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
            self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

        @staticmethod
        def get_provided_features_list():
            return ("embedding", "embedding_normalized")

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return "embedding"

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return (torch.rand([1, 3, 64, 64]) * 255).to(torch.uint8)

        def forward(self, x):
            if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4 and x.shape[1] == 3):
                raise ValueError("tiny-CLIP extractor expects uint8 (N, 3, H, W) tensors")
            x = x.float().div_(255.0)
            if tuple(x.shape[-2:]) != self.image_size:
                x = torch.nn.functional.interpolate(x, size=self.image_size, mode="bilinear", antialias=True,
                                                    align_corners=False)
            x = (x - self.mean) / self.std
            emb = self.visual(x).float()
            feats = {"embedding": emb, "embedding_normalized": torch.nn.functional.normalize(emb, dim=-1)}
            return tuple(feats[a] for a in self.features_list)

    return TinyClipFeatureExtractor


_REGISTERED: dict[str, type] = {}


def register_extractors() -> None:
    """Register the tiny-CLIP extractor with torch-fidelity (idempotent)."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if TINYCLIP_NAME not in FEATURE_EXTRACTORS_REGISTRY:
        cls = _REGISTERED.get(TINYCLIP_NAME) or _tinyclip_class()
        _REGISTERED[TINYCLIP_NAME] = cls
        register_feature_extractor(TINYCLIP_NAME, cls)


@dataclass(frozen=True)
class Extractor:
    """Everything that fixes a feature space: the cache key and the result protocol read it."""

    name: str  # torch-fidelity registry name
    feature_layer: str
    weights_sha256: str
    preprocessing: str
    label: str  # e.g. "FID in tiny-CLIP space"
    weights: str = ""  # where the weights came from (path or "in-memory")
    kwargs: dict = field(default_factory=dict, compare=False, hash=False, repr=False)
    # builds the module itself instead of torch-fidelity's registry (e.g. from weights already loaded)
    build: Callable[[list], torch.nn.Module] | None = field(default=None, compare=False, hash=False, repr=False)

    def create(self, cuda: bool = False):
        from torch_fidelity.utils import create_feature_extractor

        if self.build is not None:
            fe = self.build([self.feature_layer]).requires_grad_(False).eval()
            return fe.cuda() if cuda else fe
        register_extractors()
        return create_feature_extractor(self.name, [self.feature_layer], cuda=cuda, verbose=False, **self.kwargs)

    def describe(self) -> dict[str, Any]:
        return {"extractor": self.name, "feature_layer": self.feature_layer, "weights": self.weights,
                "weights_sha256": self.weights_sha256, "preprocessing": self.preprocessing, "label": self.label}


def tinyclip_extractor(path: str | os.PathLike | None = None, model: torch.nn.Module | None = None) -> Extractor:
    """The tiny world's CLIP image tower (``path``: its ``clip/`` folder; or a model built in code)."""
    image_size = 64
    if model is not None:
        sha = _sha256_state_dict(model.visual)
        kwargs: dict[str, Any] = {"tinyclip_model": model}
        where = "in-memory"
        size = model.visual.image_size
        image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
    else:
        if path is None:
            from memorybench.tinyworld import world_path

            path = world_path() / "clip"
        folder = Path(path)
        weights = folder / "model.safetensors"
        if not weights.is_file() or not (folder / "config.json").is_file():
            raise ModelError(f"no tiny CLIP at {folder}: expected config.json and model.safetensors "
                             "(train the tiny world first, or pass the clip/ folder)")
        sha = sha256_file(weights)
        cfg = json.loads((folder / "config.json").read_text())
        image_size = int(cfg.get("vision", {}).get("image_size", 64))
        kwargs = {"feature_extractor_weights_path": str(folder)}
        where = str(folder)
    from memorybench.tinyworld.clip import MEAN, STD

    pre = (f"uint8 RGB -> bilinear antialiased resize to {image_size}px when the size differs -> "
           f"(x/255 - {MEAN[0]}) / {STD[0]}")
    return Extractor(TINYCLIP_NAME, "embedding", sha, pre, "FID in tiny-CLIP space", where, kwargs)


def read_inception_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str]:
    """(state dict, sha256 of the file) of torch-fidelity Inception weights in a local file, read
    once: a ``.safetensors`` file, or a torch file through ``torch.load(weights_only=True)``
    (tensors only: pickled code is refused). Anything else is a one-line ``ModelError``."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ModelError(f"Inception weights at {p} cannot be read: {e.strerror or e}") from None
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load as load_safetensors

            sd = load_safetensors(data)
        else:
            sd = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        if not isinstance(sd, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
            raise ValueError("not a state dict of tensors")
        if "fc.weight" not in sd:
            raise ValueError("not an Inception-v3 state dict (no fc.weight)")
    except Exception as e:
        raise ModelError(f"Inception weights at {p} are not a valid torch-fidelity Inception state dict: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return sd, hashlib.sha256(data).hexdigest()


def _inception_from_state_dict(state_dict: dict[str, torch.Tensor], features_list: list) -> torch.nn.Module:
    """torch-fidelity's Inception-v3 module with these weights. Its constructor only takes a
    file to ``torch.load`` (with ``weights_only=False``); it gets an in-memory copy of the
    tensors we loaded safely, never the user's file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    buf = io.BytesIO()
    torch.save(state_dict, buf)  # tensors only, serialised here
    buf.seek(0)
    return FeatureExtractorInceptionV3(INCEPTION_NAME, list(features_list), feature_extractor_weights_path=buf)


def inception_extractor(weights_path: str | os.PathLike | None) -> Extractor:
    """torch-fidelity's Inception-v3 (``inception-v3-compat``, 2048-d pool) from a local weights file.

    The file is read once, here (see :func:`read_inception_state_dict`); the extractor keeps
    the checked tensors, so replacing the file afterwards changes nothing."""
    if weights_path is None or not Path(weights_path).is_file():
        raise ModelError(
            f"Inception weights not found at {weights_path}: provide torch-fidelity's "
            "weights-inception-2015-12-05-6726825d.pth (a local file; nothing is downloaded) "
            "and pass its path as feature_extractor_weights_path")
    p = Path(weights_path)
    state_dict, sha = read_inception_state_dict(p)
    return Extractor(INCEPTION_NAME, "2048", sha,
                     "uint8 RGB -> TF1-compatible bilinear resize to 299px -> (x-128)/128 (torch-fidelity)",
                     "FID (Inception-v3, torch-fidelity inception-v3-compat)", str(p),
                     build=lambda features_list: _inception_from_state_dict(state_dict, features_list))


# ----------------------------------------------------------------------------- image sets


class ArrayImages(Dataset):
    """uint8 (N, H, W, 3) numpy images as a torch-fidelity input (uint8 CHW tensors)."""

    def __init__(self, images: np.ndarray):
        a = np.asarray(images)
        if a.ndim != 4 or a.shape[-1] != 3 or a.dtype != np.uint8:
            raise DataError(f"images must be uint8 (N, H, W, 3), got {a.dtype} {a.shape}")
        self.images = np.ascontiguousarray(a)
        self._t = torch.from_numpy(self.images).permute(0, 3, 1, 2)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, i):
        return self._t[i]

    def sha256(self) -> str:
        h = hashlib.sha256(f"{self.images.dtype.str}|{self.images.shape}".encode())
        h.update(self.images.tobytes())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"source": "array", "n": len(self), "resolution": list(self.images.shape[1:3]),
                "preprocessing": "none (uint8 as given)"}


class ImageFolder(Dataset):
    """A local folder of real reference images (e.g. COCO val2014), read lazily with PIL.

    Files with an image extension, sorted by relative path; the first ``limit`` are used.
    ``resolution``: resize the shorter side to it (PIL bicubic) and centre-crop a square;
    ``None`` keeps the size and requires every image to have the first image's size.
    Missing folder, no images, a corrupt image or a size mismatch raise ``DataError``.
    """

    def __init__(self, path: str | os.PathLike, resolution: int | None = 512, limit: int | None = None,
                 recursive: bool = True):
        self.root = Path(path)
        if not self.root.is_dir():
            raise DataError(f"reference image folder {self.root} does not exist "
                            "(put the real reference images there, e.g. COCO val2014 *.jpg)")
        it = self.root.rglob("*") if recursive else self.root.iterdir()
        files = sorted(p for p in it if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_EXTS)}) in {self.root}")
        self.files = files[:limit] if limit else files
        self.resolution = resolution
        self._size: tuple[int, int] | None = None
        self._sha: str | None = None

    def __len__(self) -> int:
        return len(self.files)

    def _open(self, f: Path):
        from PIL import Image

        try:
            with Image.open(f) as im:
                im.load()
                return im.convert("RGB")
        except Exception as e:  # PIL raises many types for bad files
            raise DataError(f"corrupt or unreadable image {f}: {type(e).__name__}: {e}") from None

    def __getitem__(self, i):
        from PIL import Image

        f = self.files[i]
        im = self._open(f)
        if self.resolution:
            r = int(self.resolution)
            w, h = im.size
            s = r / min(w, h)
            nw, nh = max(r, round(w * s)), max(r, round(h * s))
            im = im.resize((nw, nh), Image.BICUBIC)
            left, top = (nw - r) // 2, (nh - r) // 2
            im = im.crop((left, top, left + r, top + r))
        else:
            if self._size is None:
                self._size = im.size
            if im.size != self._size:
                raise DataError(f"image {f} is {im.size[0]}x{im.size[1]}, not {self._size[0]}x{self._size[1]} "
                                "like the first image; pass a resolution to resize")
        return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)

    def sha256(self) -> str:
        """Content hash of the selected files (relative names and bytes), memoised."""
        if self._sha is None:
            h = hashlib.sha256()
            for f in self.files:
                h.update(str(f.relative_to(self.root)).encode() + b"\0")
                h.update(sha256_file(f).encode())
            self._sha = h.hexdigest()
        return self._sha

    def describe(self) -> dict[str, Any]:
        pre = (f"PIL bicubic resize of the shorter side to {self.resolution} + centre crop"
               if self.resolution else "none (native size)")
        return {"source": str(self.root), "n": len(self), "resolution": self.resolution, "preprocessing": pre}


def _without_local_paths(obj: Any) -> Any:
    """A protocol for a result: the ``weights``, ``source`` and ``file`` paths cut to their last part
    (files are identified by their sha256 beside them; results never carry local paths)."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in ("weights", "source", "file") and isinstance(v, str) and ("/" in v or "\\" in v):
                v = Path(v.replace("\\", "/")).name
            out[k] = _without_local_paths(v)
        return out
    return obj


# ----------------------------------------------------------------------------- statistics


@dataclass
class ReferenceStats:
    mu: np.ndarray  # float64 (D,)
    sigma: np.ndarray  # float64 (D, D)
    features: np.ndarray | None  # float32 (N, D); None for mu/sigma-only statistics (no KID)
    n: int
    meta: dict[str, Any] = field(default_factory=dict)


def extract_features(images, extractor: Extractor, batch_size: int = 64, cuda: bool = False) -> np.ndarray:
    """Features (N, D) float32 of an image set through torch-fidelity's dataset loop."""
    from torch_fidelity.utils import get_featuresdict_from_dataset

    ds = images if isinstance(images, Dataset) else ArrayImages(images)
    if len(ds) == 0:
        raise DataError("no images to extract features from")
    fe = extractor.create(cuda=cuda)
    fd = get_featuresdict_from_dataset(ds, fe, batch_size, cuda, True, False)  # save_cpu_ram: no workers
    return fd[extractor.feature_layer].numpy().astype(np.float32)


def statistics_from_features(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) as torch-fidelity computes them, in float64."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise DataError(f"FID needs at least 2 images, got {f.shape[0] if f.ndim else 0}")
    st = fid_features_to_statistics(torch.from_numpy(f))
    return np.asarray(st["mu"], np.float64), np.asarray(st["sigma"], np.float64)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance of two Gaussians (torch-fidelity's ``fid_statistics_to_metric``)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_statistics_to_metric

    s1 = {"mu": np.asarray(mu1, np.float64), "sigma": np.atleast_2d(np.asarray(sigma1, np.float64))}
    s2 = {"mu": np.asarray(mu2, np.float64), "sigma": np.atleast_2d(np.asarray(sigma2, np.float64))}
    return float(fid_statistics_to_metric(s1, s2, False)[KEY_METRIC_FID])


def reference_key(images, extractor: Extractor) -> str:
    desc = {"version": KEY_VERSION, **extractor.describe(), "image_set": images.describe(),
            "image_set_sha256": images.sha256()}
    desc.pop("weights", None)  # where the file lies does not change the numbers; its hash does
    desc["image_set"] = {k: v for k, v in desc["image_set"].items() if k != "source"}
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:40]


def _savez_checked(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_checked(path, buf.getvalue())  # atomic, with its sha256 beside it


def _parse_stats(source, name: str) -> ReferenceStats:
    try:
        with np.load(source, allow_pickle=False) as z:
            mu = np.asarray(z["mu"], np.float64)
            sigma = np.asarray(z["sigma"], np.float64)
            feats = np.asarray(z["features"], np.float32) if "features" in z.files else None
            meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
            n = int(z["n"]) if "n" in z.files else (feats.shape[0] if feats is not None else 0)
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"reference statistics file {name} is not a valid .npz with mu and sigma: {e}") from None
    if mu.ndim != 1 or sigma.shape != (mu.size, mu.size):
        raise DataError(f"reference statistics file {name}: mu {mu.shape} and sigma {sigma.shape} do not match")
    return ReferenceStats(mu, sigma, feats, n, {**meta, "file": name})


def load_reference_stats(path: str | os.PathLike) -> ReferenceStats:
    """Statistics from an ``.npz`` with ``mu`` and ``sigma`` (and optionally ``features``)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"reference statistics file {p} does not exist")
    return _parse_stats(p, str(p))


def _stats_whole(data: bytes) -> bool:
    try:
        _parse_stats(io.BytesIO(data), "cached")
        return True
    except DataError:
        return False


def reference_stats(images, extractor: Extractor, cache_dir: str | os.PathLike | None = None,
                    batch_size: int = 64, cuda: bool = False) -> ReferenceStats:
    """Reference mu/sigma/features of an image set, cached on disk when ``cache_dir`` is given.

    The cached file's sha256 lies beside it; a file that does not match it (or, without one,
    does not parse) is named in a warning, removed and computed again."""
    ds = images if isinstance(images, Dataset) else ArrayImages(images)
    key = reference_key(ds, extractor)
    meta = {"key": key, **extractor.describe(), "image_set": ds.describe(), "image_set_sha256": ds.sha256()}
    path = Path(cache_dir) / "fid_ref" / f"{key}.npz" if cache_dir is not None else None
    data = read_checked(path, "FID reference statistics", whole=_stats_whole) if path is not None else None
    if data is not None:
        try:
            st = _parse_stats(io.BytesIO(data), str(path))
            if st.features is not None and st.n == len(ds):
                st.meta.update(meta, cached=True)
                return st
        except DataError:
            pass  # hash matches but unusable (e.g. written by hand): recompute and overwrite
    feats = extract_features(ds, extractor, batch_size, cuda)
    mu, sigma = statistics_from_features(feats)
    if path is not None:
        _savez_checked(path, mu=mu, sigma=sigma, features=feats, n=np.int64(len(ds)),
                       meta=np.array(json.dumps(meta, sort_keys=True)))
    return ReferenceStats(mu, sigma, feats, len(ds), {**meta, "cached": False})


def check_kid_sizes(n_gen: int, n_ref: int, kid_subset_size: int) -> None:
    if n_gen < kid_subset_size or n_ref < kid_subset_size:
        raise DataError(
            f"KID needs at least {kid_subset_size} images in each set (its subset size); got {n_gen} generated "
            f"and {n_ref} reference images: add {max(0, kid_subset_size - min(n_gen, n_ref))} more or pass "
            f"kid_subset_size <= {min(n_gen, n_ref)}")


def fid_kid(
    gen_images,
    ref,
    extractor: Extractor,
    kid: bool = True,
    kid_subset_size: int = DEFAULT_KID_SUBSET_SIZE,
    kid_subsets: int = DEFAULT_KID_SUBSETS,
    rng_seed: int = DEFAULT_RNG_SEED,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 64,
    cuda: bool = False,
) -> dict[str, MetricValue]:
    """``fid_gen`` (and ``kid_gen``) of generated images against a reference.

    ``gen_images``: uint8 (N, H, W, 3) array (or a torch Dataset of uint8 CHW tensors).
    ``ref``: an array or ``ImageFolder`` (statistics cached under ``cache_dir``), or
    precomputed ``ReferenceStats`` (KID needs their ``features``). Errors (missing folder,
    corrupt image, too few images for KID) raise before anything is returned.
    """
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    gen = gen_images if isinstance(gen_images, Dataset) else ArrayImages(gen_images)
    if isinstance(ref, ReferenceStats):
        rs = ref
    else:
        ref_ds = ref if isinstance(ref, Dataset) else ArrayImages(ref)
        if kid:
            check_kid_sizes(len(gen), len(ref_ds), kid_subset_size)  # fail before any extraction
        rs = reference_stats(ref_ds, extractor, cache_dir, batch_size, cuda)
    if kid:
        if rs.features is None:
            raise DataError("KID needs the reference features; these reference statistics hold only mu and sigma "
                            "(pass kid=False or an image set)")
        check_kid_sizes(len(gen), rs.features.shape[0], kid_subset_size)
    gen_feats = extract_features(gen, extractor, batch_size, cuda)
    mu, sigma = statistics_from_features(gen_feats)
    if mu.shape != rs.mu.shape:
        raise DataError(f"feature sizes differ: generated {mu.shape[0]}, reference {rs.mu.shape[0]} "
                        "(reference statistics from another extractor?)")
    fid = frechet_distance(mu, sigma, rs.mu, rs.sigma)
    proto = _without_local_paths({
        **extractor.describe(), "n_gen": len(gen), "n_ref": rs.n,
        "reference": {k: v for k, v in rs.meta.items() if k not in ("extractor", "feature_layer", "weights",
                                                                     "weights_sha256", "preprocessing", "label")},
        "gen_image_set": gen.describe()})
    impl = f"torch-fidelity {_tf_version()} {extractor.name}/{extractor.feature_layer}: {extractor.label}"
    out = {"fid_gen": MetricValue(value=max(fid, 0.0) if fid > -1e-6 else fid, n=len(gen), higher_is_better=False,
                                  implementation=impl, protocol={**proto, "ci": "none"})}
    if kid:
        k = kid_features_to_metric(torch.from_numpy(gen_feats), torch.from_numpy(rs.features),
                                   kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, rng_seed=rng_seed,
                                   verbose=False)
        mean, std = float(k[KEY_METRIC_KID_MEAN]), float(k[KEY_METRIC_KID_STD])
        out["kid_gen"] = MetricValue(
            value=mean, n=len(gen), ci_low=mean - 1.96 * std, ci_high=mean + 1.96 * std, higher_is_better=False,
            implementation=impl.replace("FID", "KID"),
            protocol={**proto, "label": extractor.label.replace("FID", "KID"), "kid_subsets": kid_subsets,
                      "kid_subset_size": kid_subset_size, "kid_kernel": "poly degree 3, gamma 1/D, coef0 1",
                      "kid_std": std, "rng_seed": rng_seed,
                      "ci": "mean +- 1.96 x std of the per-subset KID estimates (normal 95% range of one "
                            "subset's estimate; conservative for the mean; not a bootstrap CI)"})
    return out


def _tf_version() -> str:
    try:
        import torch_fidelity

        return str(torch_fidelity.__version__)
    except Exception:  # pragma: no cover
        return "unknown"


__all__ = [
    "Extractor", "tinyclip_extractor", "inception_extractor", "register_extractors",
    "ArrayImages", "ImageFolder", "ReferenceStats", "extract_features", "statistics_from_features",
    "frechet_distance", "reference_stats", "load_reference_stats", "reference_key", "check_kid_sizes", "fid_kid",
    "TINYCLIP_NAME", "INCEPTION_NAME",
]
