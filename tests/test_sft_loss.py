"""The SFT objective on hand-worked numbers: 1/t weighting, only masked completion tokens count, prompts never masked."""

from __future__ import annotations

import math

import pytest
import torch

from dllmrl.errors import ConfigError
from dllmrl.training.sft import SftRow, collate, draw_t, mask_completion, sft_loss
from dllmrl.training.sft_config import SftConfig

LOG2 = math.log(2.0)


def _logits(B: int, L: int) -> torch.Tensor:
    # softmax([0, log 2, 0]) = [1/4, 1/2, 1/4]: CE is log 2 for gold 1 and log 4 for gold 0 or 2
    return torch.tensor([0.0, LOG2, 0.0]).expand(B, L, 3).clone()


def test_loss_is_ce_over_masked_tokens_weighted_by_one_over_t_and_answer_length():
    clean = torch.tensor([[2, 2, 1, 0],
                          [2, 2, 0, 1]])
    masked = torch.tensor([[False, False, True, True],     # row 0: CE log 2 + log 4 = 3 log 2
                           [False, False, False, True]])   # row 1: CE log 2
    t = torch.tensor([0.5, 0.25])
    out = sft_loss(_logits(2, 4), clean, masked, t, completion_len=torch.tensor([2, 2]))
    # (1/B) * [3 log2 / (0.5 * 2) + log2 / (0.25 * 2)] = (3 log2 + 2 log2) / 2
    assert out.loss.item() == pytest.approx(2.5 * LOG2)
    assert out.ce.item() == pytest.approx((LOG2 + 2 * LOG2 + LOG2) / 3)  # unweighted mean over the 3 masked tokens
    assert out.acc.item() == pytest.approx(2 / 3)  # argmax is token 1: right where gold is 1
    assert int(out.masked) == 3


def test_unmasked_positions_do_not_count_whatever_their_logits():
    clean = torch.tensor([[2, 2, 1, 0]])
    masked = torch.tensor([[False, False, True, False]])
    logits = _logits(1, 4)
    base = sft_loss(logits, clean, masked, torch.tensor([1.0]), torch.tensor([2])).loss
    logits[0, :2] = torch.randn(2, 3) * 10  # prompt positions
    logits[0, 3] = torch.tensor([-50.0, 50.0, 0.0])  # unmasked completion position, badly wrong
    assert sft_loss(logits, clean, masked, torch.tensor([1.0]), torch.tensor([2])).loss.item() == pytest.approx(base.item())
    assert base.item() == pytest.approx(LOG2 / 2)


def test_gradient_reaches_only_masked_positions():
    clean = torch.tensor([[2, 2, 1, 0]])
    masked = torch.tensor([[False, False, False, True]])
    logits = _logits(1, 4).requires_grad_(True)
    sft_loss(logits, clean, masked, torch.tensor([0.5]), torch.tensor([2])).loss.backward()
    assert logits.grad[0, :3].abs().sum() == 0 and logits.grad[0, 3].abs().sum() > 0


def test_no_masked_token_gives_zero_loss_not_nan():
    clean = torch.tensor([[2, 1]])
    out = sft_loss(_logits(1, 2), clean, torch.zeros(1, 2, dtype=torch.bool), torch.tensor([0.01]), torch.tensor([1]))
    assert out.loss.item() == 0 and out.ce.item() == 0 and not torch.isnan(out.acc)


def test_mask_completion_never_touches_the_prompt():
    g = torch.Generator().manual_seed(0)
    batch = collate([SftRow((5, 6, 7), (8, 9, 4)), SftRow((6,), (9, 4, 4))], pad_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9, 4], [0, 0, 6, 9, 4, 4]]  # left-padded like the sampler
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1]]
    noisy, masked = mask_completion(batch.input_ids, batch.completion_mask, torch.tensor([1.0, 1.0]), 99, g)
    assert noisy[:, :3].tolist() == batch.input_ids[:, :3].tolist()  # t = 1: prompt intact ...
    assert (noisy[:, 3:] == 99).all() and masked[:, 3:].all() and not masked[:, :3].any()  # ... completion all masked


def test_mask_rate_follows_t_per_row():
    g = torch.Generator().manual_seed(0)
    clean = torch.zeros(2, 20_000, dtype=torch.long)
    comp = torch.ones_like(clean, dtype=torch.bool)
    _, masked = mask_completion(clean, comp, torch.tensor([0.1, 0.7]), 1, g)
    rate = masked.float().mean(1)
    assert rate[0].item() == pytest.approx(0.1, abs=0.01) and rate[1].item() == pytest.approx(0.7, abs=0.01)


def test_t_is_never_below_min_t():
    t = draw_t(10_000, 0.05, torch.Generator().manual_seed(0))
    assert t.min().item() >= 0.05 and t.max().item() <= 1.0 and t.mean().item() == pytest.approx(0.525, abs=0.01)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"min_t": 0.0}, "--min-t"),
        ({"batch_size": 0}, "--batch-size must be positive"),
        ({"lora": "maybe"}, "--lora must be one of auto, on, off"),
        ({"max_steps": 10, "warmup_steps": 10}, "--warmup-steps 10 is not below --max-steps 10"),
        ({"limit": 0}, "--limit"),
    ],
)
def test_config_errors_say_the_fix(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        SftConfig(**kwargs)
