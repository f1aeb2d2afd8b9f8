"""FID / KID through torch-fidelity: closed forms, invariances, cache, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from memorybench.errors import DataError, ModelError
from memorybench.metrics.fid import (
    ImageFolder,
    extract_features,
    fid_kid,
    frechet_distance,
    inception_extractor,
    load_reference_stats,
    reference_stats,
    statistics_from_features,
    tinyclip_extractor,
)


@pytest.fixture(scope="module")
def extractor():
    from memorybench.tinyworld.clip import build_tiny_clip

    torch.manual_seed(0)
    model = build_tiny_clip(vocab_size=64, context_length=8).eval()  # random weights, built in code
    return tinyclip_extractor(model=model)


def _images(seed, n, size=64, lo=0, hi=256):
    rng = np.random.default_rng(seed)
    base = rng.integers(lo, hi, size=(n, 8, 8, 3)).astype(np.uint8)
    return np.repeat(np.repeat(base, size // 8, 1), size // 8, 2)  # blocky, so the CLIP sees structure


def test_frechet_closed_form_diagonal():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.1, 2, 5), rng.uniform(0.1, 2, 5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-9)


def test_frechet_closed_form_general_covariances():
    from scipy.linalg import sqrtm

    rng = np.random.default_rng(1)
    m1, m2 = rng.normal(size=(6, 6)), rng.normal(size=(6, 6))
    s1, s2 = m1 @ m1.T + 0.1 * np.eye(6), m2 @ m2.T + 0.1 * np.eye(6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(sqrtm(s1 @ s2)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-7)


def test_empirical_gaussian_features_approach_closed_form():
    rng = np.random.default_rng(2)
    d, n = 4, 200_000
    a, b = np.array([1.0, 2.0, 0.5, 1.5]), np.array([0.5, 1.0, 1.0, 3.0])
    x = rng.normal(size=(n, d)) * np.sqrt(a)
    y = rng.normal(size=(n, d)) * np.sqrt(b) + 1.0
    closed = d * 1.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    (mx, sx), (my, sy) = statistics_from_features(x), statistics_from_features(y)
    assert frechet_distance(mx, sx, my, sy) == pytest.approx(closed, rel=0.02)


def test_fid_of_a_set_against_itself_is_zero(extractor):
    imgs = _images(0, 40)
    out = fid_kid(imgs, imgs, extractor, kid_subset_size=20, kid_subsets=10)
    assert abs(out["fid_gen"].value) < 1e-4
    assert abs(out["kid_gen"].value) < 1e-2
    assert "tiny-CLIP" in out["fid_gen"].implementation
    assert out["fid_gen"].protocol["label"] == "FID in tiny-CLIP space"
    assert out["kid_gen"].protocol["kid_subset_size"] == 20
    other = fid_kid(_images(1, 40, lo=100, hi=200), imgs, extractor, kid_subset_size=20, kid_subsets=10)
    assert other["fid_gen"].value > 1e-2 and other["kid_gen"].value > out["kid_gen"].value


def test_fid_does_not_depend_on_batch_size(extractor):
    a, b = _images(3, 30), _images(4, 33)
    v = [fid_kid(a, b, extractor, kid_subset_size=10, kid_subsets=5, batch_size=bs) for bs in (1, 7, 64)]
    for o in v[1:]:
        assert o["fid_gen"].value == pytest.approx(v[0]["fid_gen"].value, rel=1e-4, abs=1e-6)
        assert o["kid_gen"].value == pytest.approx(v[0]["kid_gen"].value, rel=1e-3, abs=1e-7)


def test_matches_torch_fidelity_calculate_metrics(extractor):
    import torch_fidelity

    from memorybench.metrics.fid import ArrayImages, register_extractors

    register_extractors()
    a, b = _images(5, 24), _images(6, 24)
    ours = fid_kid(a, b, extractor, kid_subset_size=12, kid_subsets=7)
    theirs = torch_fidelity.calculate_metrics(
        input1=ArrayImages(a), input2=ArrayImages(b), feature_extractor=extractor.name, fid=True, kid=True,
        kid_subset_size=12, kid_subsets=7, cuda=False, cache=False, verbose=False, save_cpu_ram=True,
        **extractor.kwargs)
    assert ours["fid_gen"].value == pytest.approx(theirs["frechet_inception_distance"], rel=1e-5)
    assert ours["kid_gen"].value == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-5)


def test_kid_subset_size_error(extractor):
    imgs = _images(7, 10)
    with pytest.raises(DataError, match="KID needs at least 50 images"):
        fid_kid(imgs, _images(8, 60), extractor, kid_subset_size=50)
    out = fid_kid(imgs, _images(8, 60), extractor, kid=False)
    assert "kid_gen" not in out


def test_reference_cache_roundtrip(extractor, tmp_path):
    ref = _images(9, 25)
    st = reference_stats(ref, extractor, cache_dir=tmp_path)
    files = list((tmp_path / "fid_ref").glob("*.npz"))
    assert len(files) == 1 and not st.meta["cached"]
    again = reference_stats(ref, extractor, cache_dir=tmp_path)
    assert again.meta["cached"] and np.array_equal(again.features, st.features)
    loaded = load_reference_stats(files[0])
    np.testing.assert_allclose(loaded.mu, st.mu)
    # a different image set gets a different key
    reference_stats(_images(10, 25), extractor, cache_dir=tmp_path)
    assert len(list((tmp_path / "fid_ref").glob("*.npz"))) == 2
    # precomputed stats give the same FID as the images
    gen = _images(11, 25)
    a = fid_kid(gen, ref, extractor, kid_subset_size=10, kid_subsets=5)
    b = fid_kid(gen, loaded, extractor, kid_subset_size=10, kid_subsets=5)
    assert a["fid_gen"].value == pytest.approx(b["fid_gen"].value, rel=1e-9)


def test_image_folder_errors(extractor, tmp_path):
    from PIL import Image

    with pytest.raises(DataError, match="does not exist"):
        ImageFolder(tmp_path / "coco")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images"):
        ImageFolder(empty)
    good = tmp_path / "imgs"
    good.mkdir()
    for i, im in enumerate(_images(12, 12, size=48)):
        Image.fromarray(im).save(good / f"{i:03d}.png")
    folder = ImageFolder(good, resolution=64)
    assert len(folder) == 12 and tuple(folder[0].shape) == (3, 64, 64) and folder[0].dtype == torch.uint8
    out = fid_kid(_images(13, 12), folder, extractor, kid_subset_size=6, kid_subsets=3)
    assert out["fid_gen"].protocol["reference"]["image_set"]["resolution"] == 64
    (good / "005.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataError, match="005.png"):
        fid_kid(_images(13, 12), ImageFolder(good, resolution=64), extractor, kid_subset_size=6, kid_subsets=3)
    with pytest.raises(DataError, match="KID needs at least 20"):
        fid_kid(_images(13, 30), ImageFolder(good, resolution=64), extractor, kid_subset_size=20)


def test_missing_weights_errors(tmp_path):
    with pytest.raises(ModelError, match="Inception weights not found"):
        inception_extractor(tmp_path / "weights-inception.pth")
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ModelError, match="not a valid"):
        inception_extractor(tmp_path / "bad.pth")
    with pytest.raises(ModelError, match="no tiny CLIP"):
        tinyclip_extractor(tmp_path / "clip")


def test_inception_path_with_local_random_weights(tmp_path):
    """The real-run extractor loads weights from a local file (random here) and runs."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Blank(FeatureExtractorInceptionV3):
        def load_state_dict(self, *a, **k):
            return None

    torch.save({}, tmp_path / "empty.pth")
    torch.manual_seed(0)
    sd = _Blank("x", ["2048"], feature_extractor_weights_path=str(tmp_path / "empty.pth")).state_dict()
    torch.save(sd, tmp_path / "inception.pth")
    ext = inception_extractor(tmp_path / "inception.pth")
    feats = extract_features(_images(14, 3, size=32), ext, batch_size=3)
    assert feats.shape == (3, 2048) and np.isfinite(feats).all()


def test_tinyworld_fid_plugin_on_a_hand_built_run(extractor, tmp_path, monkeypatch):
    import types

    import memorybench.metrics.plugins.tinyworld_fid as quality
    from memorybench.api.metric import RunView

    monkeypatch.setattr(quality, "tinyclip_extractor", lambda path=None: extractor)
    monkeypatch.setattr(quality, "N_REFERENCE", 40)
    world = types.SimpleNamespace(
        train_images=np.concatenate([_images(20, 2), _images(21, 80)]),
        train_kind=["memorized"] * 2 + ["general"] * 80, heldout_images=_images(22, 6))
    gen = {f"g{i}": _images(30 + i, 4) for i in range(6)}
    run = RunView(suite=types.SimpleNamespace(name="fake"),
                  data=types.SimpleNamespace(world=world), images={"general": gen},
                  cache_dir=tmp_path, progress=False)
    ref, desc, spare = quality.reference_images(world, 40)
    assert len(ref) == 40 and desc["heldout_images"] == 6 and desc["train_general"]["count"] == 34
    assert spare[0] == 2 + 34
    out = quality.TinyWorldFID().compute(run)
    assert set(out) == {"fid_gen", "kid_gen"}
    assert out["fid_gen"].n == 24 and out["kid_gen"].protocol["kid_subset_size"] == 24
    assert out["fid_gen"].protocol["reference_set"] == desc
    assert run.calibration["fid"]["n_real"] == 24 and run.calibration["fid"]["n_reference"] == 40
    assert list((tmp_path / "fid_ref").glob("*.npz"))


class _Planted:
    """Unpickling this object creates a marker file (stands for any code in a pickle)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _random_inception_weights(path):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Blank(FeatureExtractorInceptionV3):
        def load_state_dict(self, *a, **k):
            return None

    buf = __import__("io").BytesIO()
    torch.save({}, buf)
    buf.seek(0)
    torch.manual_seed(0)
    sd = _Blank("x", ["2048"], feature_extractor_weights_path=buf).state_dict()
    torch.save(sd, path)
    return sd


def test_torch_fidelity_never_unpickles_the_inception_file(tmp_path, monkeypatch):
    """The file is read once, safely; torch-fidelity's own weights_only=False load only ever gets
    the in-memory tensors, so a file swapped for a pickle with code after the check runs nothing."""
    import io

    weights, marker = tmp_path / "inception.pth", tmp_path / "code-ran"
    sd = _random_inception_weights(weights)
    ext = inception_extractor(weights)
    imgs = _images(14, 3, size=32)
    before = extract_features(imgs, ext, batch_size=3)
    torch.save({**sd, "planted": _Planted(marker)}, weights)  # swapped after the check
    assert not marker.exists()
    calls = []
    real_load = torch.load

    def recording_load(f, *args, **kwargs):
        calls.append((f, kwargs.get("weights_only")))
        if kwargs.get("weights_only") is not True and not isinstance(f, io.BytesIO):
            raise AssertionError(f"unsafe torch.load of {f!r}")
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    after = extract_features(imgs, ext, batch_size=3)
    assert calls and not marker.exists()
    assert all(isinstance(f, io.BytesIO) for f, _ in calls)  # never the user's path
    np.testing.assert_array_equal(before, after)  # the checked weights, not the swapped file
    with pytest.raises(ModelError, match="not a valid torch-fidelity Inception state dict"):
        inception_extractor(weights)  # the swapped file itself is refused
    assert not marker.exists()


def test_inception_weights_from_safetensors(tmp_path):
    from safetensors.torch import save_file

    sd = _random_inception_weights(tmp_path / "inception.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "inception.safetensors"))
    a = extract_features(_images(15, 2, size=32), inception_extractor(tmp_path / "inception.pth"), batch_size=2)
    b_ext = inception_extractor(tmp_path / "inception.safetensors")
    b = extract_features(_images(15, 2, size=32), b_ext, batch_size=2)
    np.testing.assert_array_equal(a, b)
    assert b_ext.weights_sha256 != inception_extractor(tmp_path / "inception.pth").weights_sha256


def test_damaged_reference_statistics_are_named_and_recomputed(extractor, tmp_path, capfd):
    from memorybench.core.io import digest_path

    ref = _images(16, 20)
    first = reference_stats(ref, extractor, cache_dir=tmp_path)
    (path,) = (tmp_path / "fid_ref").glob("*.npz")
    assert digest_path(path).is_file()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit
    path.write_bytes(bytes(data))
    capfd.readouterr()
    again = reference_stats(ref, extractor, cache_dir=tmp_path)
    err = capfd.readouterr().err
    assert path.name in err and "discarded" in err and not again.meta["cached"]
    np.testing.assert_array_equal(again.features, first.features)
    # another valid .npz put in its place (loading alone cannot tell): caught by the hash
    other = reference_stats(_images(17, 20), extractor, cache_dir=tmp_path / "other")
    (other_path,) = (tmp_path / "other" / "fid_ref").glob("*.npz")
    path.write_bytes(other_path.read_bytes())
    swapped = reference_stats(ref, extractor, cache_dir=tmp_path)
    assert path.name in capfd.readouterr().err and not swapped.meta["cached"]
    np.testing.assert_array_equal(swapped.mu, first.mu)
    assert not np.array_equal(other.mu, first.mu)
    assert reference_stats(ref, extractor, cache_dir=tmp_path).meta["cached"]  # whole again, hash rewritten
    path.write_bytes(b"")
    assert not reference_stats(ref, extractor, cache_dir=tmp_path).meta["cached"]
    assert path.name in capfd.readouterr().err
    digest_path(path).unlink()  # a cache written before hashes were kept: adopted when it parses
    assert reference_stats(ref, extractor, cache_dir=tmp_path).meta["cached"] and digest_path(path).is_file()
