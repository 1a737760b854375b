"""Training runs on the tiny LLaDA and Dream fixtures as on the ModernBERT tiny model.

    python3 -m pytest -q tests/test_llada_dream_train.py

A few LoRA steps of ``dllmrl sft`` (the masked-diffusion objective) on each fixture, then the
adapter loads back with --adapter and the sampler runs on the tuned model; and two EGSPO-SA
steps of the RL trainer on each fixture change every LoRA parameter (TRL's test_train idea).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dllmrl.config import ModelConfig, SamplerConfig
from dllmrl.models import load_model
from dllmrl.registry import TASKS
from dllmrl.sampling.sampler import sample
from dllmrl.training.sft import run_sft
from dllmrl.training.sft_config import SftConfig
from dllmrl.tasks.base import Example
from toy_tasks import ExactMatchToy, ToyLowercase

FIXTURES = Path(__file__).parent / "fixtures"


class ToyCopy(ExactMatchToy):
    """Copy a 3-letter word: only the plumbing matters here."""

    name = "toy-copy-native"
    prompt_styles = ("compact",)
    prefill = ""
    split_sizes = {"train": 32, "test": 4}

    def _load(self, split):
        words = ["abc", "bca", "cab", "acb"] * (self.split_sizes[split] // 4)
        return [Example(f"{split}-{i}", "", w) for i, w in enumerate(words)]

    def build_prompt(self, ex, prompt_style):
        return ex.target

    def sft_target(self, ex, prompt_style):
        return ex.target


if ToyCopy.name not in TASKS:
    TASKS.register(ToyCopy.name, ToyCopy)


@pytest.mark.parametrize("fixture", ["llada-tiny", "dream-tiny"])
def test_lora_sft_steps_then_adapter_loads_and_samples(fixture, tmp_path):
    model_dir = str(FIXTURES / fixture)
    cfg = SftConfig(task=ToyCopy.name, prompt_style="compact", output=str(tmp_path / "run"), gen_len=8,
                    batch_size=4, max_steps=3, lr=1e-2, warmup_steps=0, lora="on", lora_r=4, lora_alpha=8,
                    save_every=0, log_every=1)
    res = run_sft(cfg, ModelConfig(model=model_dir, device="cpu"))
    assert res.step == 3 and res.lora and (res.model_dir / "adapter_config.json").exists()

    tuned = load_model(ModelConfig(model=model_dir, adapter=str(res.model_dir), device="cpu"))
    lora_b = {n: p for n, p in tuned.model.named_parameters() if "lora_B" in n}
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b.values())  # lora_B starts at zero: each one moved
    ids, attn = tuned.encode([tuned.render_prompt("abc", chat=False), tuned.render_prompt("b", chat=False)])
    traj = sample(tuned, ids, attn, SamplerConfig(gen_len=8, steps=4, block_len=8, temperature=0.0))
    assert traj.tokens.shape == (2, ids.shape[1] + 8) and not (traj.tokens[:, -8:] == tuned.mask_id).any()
    assert torch.isfinite(traj.step_logp).all()


class NativeToyLowercase(ToyLowercase):
    """RL toy: reward = fraction of lowercase characters in the completion (graded, so advantages are nonzero)."""

    name = "toy-lowercase-native"
    split_sizes = {"train": 8, "test": 4}

    def rewards(self):
        return {"lowercase": (self.lowercase, 1.0)}


@pytest.mark.parametrize("fixture", ["llada-tiny", "dream-tiny"])
def test_two_egspo_sa_steps_change_every_lora_parameter(fixture, tmp_path):
    from dllmrl.training.train_config import TrainConfig
    from dllmrl.training.trainer import Trainer

    cfg = TrainConfig(task=NativeToyLowercase.name, method="egspo-sa", k_steps=2, num_generations=4, batch_size=8,
                      grad_accum=1, lr=2e-2, warmup_steps=0, max_steps=2, lora_r=4, lora_alpha=8, weight_decay=0.0,
                      beta=0.04, chat=False, output=str(tmp_path), save_every=0, log_every=1, reward_workers=1)
    scfg = SamplerConfig(gen_len=8, steps=4, block_len=8, temperature=1.0)
    trainer = Trainer(cfg, scfg, ModelConfig(model=str(FIXTURES / fixture), device="cpu", dtype="float32"),
                      task=NativeToyLowercase())
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    assert before  # two steps: lora_B starts at zero, so lora_A has no gradient until B has moved
    result = trainer.run()
    after = dict(trainer.model.named_parameters())
    assert result.step == 2 and (tmp_path / "adapter" / "adapter_config.json").exists()
    assert not [n for n in before if torch.equal(before[n], after[n])], "LoRA parameters not trained"
