"""Shared fixtures: a tiny ModernBERT masked LM built offline, once per session."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread: another busy process on 2 cores slows a 2-thread torch loop 100x (ENVIRONMENT.md).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A random tiny ModernBERT (hidden 32, 2 layers) with the character tokenizer."""
    from dllmrl.models.tiny import TinyConfig, build_tiny

    return str(build_tiny(tmp_path_factory.mktemp("tiny"), TinyConfig(hidden=32, layers=2, heads=2, intermediate=64)))


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    """The tiny model loaded as a ModelAdapter on CPU, float32."""
    from dllmrl.config import ModelConfig
    from dllmrl.models import load_model

    return load_model(ModelConfig(model=tiny_model_dir, device="cpu", dtype="float32"))


@pytest.fixture(scope="session")
def toy_model_dir(tiny_model_dir, tmp_path_factory) -> str:
    """The tiny model with a sharpened output norm, so that RL on the toy task sees confident, varied samples."""
    from dllmrl.config import ModelConfig
    from dllmrl.models import load_model

    a = load_model(ModelConfig(model=tiny_model_dir, device="cpu", dtype="float32"))
    with torch.no_grad():
        a.model.head.norm.weight.mul_(10.0)
    out = tmp_path_factory.mktemp("toy-model")
    a.model.save_pretrained(out)
    a.tokenizer.save_pretrained(out)
    return str(out)


@pytest.fixture()
def count_sampling(monkeypatch):
    """Record the batch size of every sampler call (resume tests: what was generated again)."""
    import dllmrl.sampling.sampler

    calls = []
    real = dllmrl.sampling.sampler.sample

    def counting(*args, **kwargs):
        calls.append(args[1].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(dllmrl.sampling.sampler, "sample", counting)
    return calls
