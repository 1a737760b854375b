"""Fast-dLLM key/value caches (prefix, dual) on the native LLaDA and Dream classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from dllmrl.cli import app
from dllmrl.config import ModelConfig, SamplerConfig
from dllmrl.errors import ConfigError
from dllmrl.models import load_model
from dllmrl.models.layers import KVCache
from dllmrl.sampling.sampler import sample

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module", params=["llada-tiny", "dream-tiny"])
def native(request):
    return load_model(ModelConfig(model=str(FIXTURES / request.param), device="cpu", dtype="float32"))


def two_lengths(adapter) -> tuple[torch.Tensor, torch.Tensor]:
    """A left-padded batch of two prompts of lengths 9 and 5."""
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(20, 90, (2, 9), generator=g)
    attn = torch.ones_like(ids)
    attn[1, :4] = 0
    ids[1, :4] = adapter.pad_id if adapter.pad_id is not None else 0
    return ids, attn


@pytest.mark.parametrize("window", [(9, 25), (9, 17), (13, 17), (0, 4)], ids=["prefix", "dual", "inner", "start"])
def test_window_over_a_fresh_cache_equals_the_full_forward_there(native, window):
    """Positions, padding mask and Dream's shift are those of the whole sequence."""
    ids, attn = two_lengths(native)
    x = torch.cat([ids, torch.full((2, 16), native.mask_id)], 1)  # (2, 25)
    full_attn = torch.cat([attn, torch.ones((2, 16), dtype=torch.long)], 1)
    with torch.no_grad():
        full = native.hidden(x, full_attn)
        cache = KVCache()
        assert torch.equal(native.hidden(x, full_attn, cache=cache), full)  # filling changes nothing
        got = native.hidden(x, full_attn, cache=cache, window=window)
    assert got.shape == (2, window[1] - window[0], full.shape[-1])
    assert torch.allclose(got, full[:, window[0]:window[1]], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("decode", ["fixed", "threshold"])
def test_cache_refreshed_every_step_samples_the_uncached_tokens(native, cache, decode):
    ids, attn = two_lengths(native)
    base = SamplerConfig(gen_len=16, steps=8, block_len=8, decode=decode, threshold=0.3)
    want = sample(native, ids, attn, base)
    got = sample(native, ids, attn, SamplerConfig(**{**base.__dict__, "cache": cache, "cache_refresh": 1}))
    assert torch.equal(got.tokens, want.tokens) and torch.equal(got.unmask_step, want.unmask_step)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cached_sampling_reveals_every_position_on_schedule(native, cache):
    ids, attn = two_lengths(native)
    traj = sample(native, ids, attn, SamplerConfig(gen_len=16, steps=8, block_len=8, cache=cache, temperature=0.7),
                  generator=torch.Generator().manual_seed(0), greedy_at=(1, 5))
    assert not bool((traj.completion_ids == native.mask_id).any())
    assert traj.step_count.tolist() == [[2] * 8, [2] * 8] and traj.nfe >= 8
    assert (traj.greedy_tokens != native.mask_id).all()  # dual: the greedy steps ran a full forward


def test_cache_with_threshold_decoding_takes_at_most_the_fixed_forwards(native):
    ids, attn = two_lengths(native)
    traj = sample(native, ids, attn, SamplerConfig(gen_len=16, steps=8, block_len=8, cache="dual", decode="threshold",
                                                   threshold=0.0))
    assert traj.nfe == 2  # threshold 0 reveals a whole block per forward
    assert not bool((traj.completion_ids == native.mask_id).any())


def test_a_family_without_a_cache_is_one_clear_error(tiny):
    ids, attn = tiny.encode(["ab"])
    with pytest.raises(ConfigError, match="--cache prefix.*no key-value cache.*--cache none"):
        sample(tiny, ids, attn, SamplerConfig(gen_len=8, steps=4, block_len=8, cache="prefix"))


def test_bad_cache_value_names_the_flag():
    with pytest.raises(ConfigError, match="--cache must be one of none, prefix, dual"):
        SamplerConfig(cache="triple")


def test_cache_in_train_is_one_clear_error_line():
    r = CliRunner().invoke(app, ["train", "sudoku", "--model", "x", "--cache", "dual"])
    assert r.exit_code == 1
    assert "--cache dual is for sample and eval only" in r.output and len(r.output.strip().splitlines()) == 1
