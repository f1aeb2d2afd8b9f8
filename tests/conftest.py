import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def dummy_pipe():
    from memorybench.model.pipeline import PipelineAdapter

    return PipelineAdapter.dummy(seed=0)


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"
