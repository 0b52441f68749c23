"""Shared fixtures: the offline tiny model, small datasets with teacher pools, and quiet, single-threaded torch."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # 2 busy cores: one torch thread is usually faster
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may touch the hub
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny model + tokenizer directory, built once per test session."""
    from ampo_trl.demo.tiny import tiny_model_path

    return str(tiny_model_path(cache_dir=tmp_path_factory.mktemp("tiny-cache")))


@pytest.fixture
def tiny_model_and_tokenizer():
    from ampo_trl.demo.tiny import build_tiny_model_and_tokenizer

    return build_tiny_model_and_tokenizer(seed=0)
