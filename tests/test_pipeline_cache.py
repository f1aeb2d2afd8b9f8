"""Pipeline adapter (batch independence, folder loading) and the generation cache."""

import json

import numpy as np
import pytest

from memorybench.run.cache import GenerationCache, GenerationKey
from memorybench.errors import ModelError
from memorybench.model.pipeline import PipelineAdapter, SamplerSettings

SETTINGS = SamplerSettings(sampler="ddim", steps=4, guidance=7.5, height=32, width=32)
PROMPTS = ["a red cat", "an old city street at night", "a photo of a boat", "a green tree"]


@pytest.mark.parametrize("sampler", ["ddim", "pndm", "dpmsolver", "euler"])
def test_image_does_not_depend_on_batch_size(dummy_pipe, sampler):
    s = SamplerSettings(sampler=sampler, steps=4, guidance=7.5, height=32, width=32)
    batched = dummy_pipe.generate(PROMPTS, [0, 1, 2, 3], s)
    single = np.concatenate([dummy_pipe.generate([p], [i], s) for i, p in enumerate(PROMPTS)])
    assert batched.shape == (4, 32, 32, 3) and batched.dtype == np.uint8
    # bit-exact is not guaranteed across batch shapes by BLAS; one uint8 level is the bound
    assert np.abs(batched.astype(int) - single.astype(int)).max() <= 1


def test_seed_and_prompt_change_the_image(dummy_pipe):
    a, b, c = dummy_pipe.generate(["a red cat", "a red cat", "a green tree"], [0, 1, 0], SETTINGS)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 1
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 0.1


def test_saved_folder_round_trips(dummy_pipe, tmp_path):
    dummy_pipe.pipe.save_pretrained(tmp_path / "model")
    loaded = PipelineAdapter.from_folder(tmp_path / "model")
    assert loaded.model_id == "model" and len(loaded.weights_sha256) == 64
    assert (loaded.generate(["a red cat"], [3], SETTINGS) == dummy_pipe.generate(["a red cat"], [3], SETTINGS)).all()


def test_missing_or_malformed_model_folder_is_named(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        PipelineAdapter.from_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no model_index.json"):
        PipelineAdapter.from_folder(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DConditionModel"]}))
    (broken / "unet").mkdir()
    with pytest.raises(ModelError, match="missing component folder.*vae"):
        PipelineAdapter.from_folder(broken)


def _key(prompt="p", seed=0, **kw):
    base = dict(weights_sha256="w" * 64, method="none", method_config_sha256="c" * 64, prompt=prompt, seed=seed,
                sampler="ddim", steps=4, guidance=7.5, height=32, width=32, dtype="fp32")
    return GenerationKey(**{**base, **kw})


def test_cache_key_covers_every_field():
    keys = {_key().digest(), _key(prompt="q").digest(), _key(seed=1).digest(), _key(steps=5).digest(),
            _key(guidance=7.0).digest(), _key(method_config_sha256="d" * 64).digest(), _key(dtype="bf16").digest()}
    assert len(keys) == 7


def test_cache_store_load_is_lossless_and_atomic(tmp_path):
    cache = GenerationCache(tmp_path)
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert not cache.has(_key())
    cache.store(_key(), image, seconds=0.5, prompt_set="memorized")
    assert cache.has(_key()) and (cache.load(_key()) == image).all()
    assert not list(tmp_path.rglob("*.tmp"))
    # a torn manifest line (killed mid-write) is skipped, not fatal
    with open(cache.manifest, "a") as f:
        f.write('{"digest": "trunc')
    assert cache.seconds_by_digest() == {_key().digest(): 0.5}
