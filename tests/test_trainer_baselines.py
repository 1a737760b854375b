"""The baselines (wd1, SPG, d2-StepMerge) and EGSPO with the entropy-mass selector through the real trainer on
the tiny model and the lowercase toy: two optimizer steps change every LoRA parameter; resume replays exactly.

The toy model is tests/test_trainer.py's (the tiny ModernBERT with its output LayerNorm gain raised 10x)."""

from __future__ import annotations

import pytest
import torch

from dllmrl.config import ModelConfig, SamplerConfig
from dllmrl.training.metrics import read_metrics
from dllmrl.training.trainer import Trainer, train
from toy_tasks import TOY_GEN_LEN, ToyLowercase

# two blocks of 4, so SPG's block-wise masks have a choice of block
SCFG = SamplerConfig(gen_len=TOY_GEN_LEN, steps=4, block_len=TOY_GEN_LEN // 2, temperature=1.0)

RUNS = {
    "wd1": dict(method="wd1", mu=2),
    "spg": dict(method="spg", mu=2, mc_samples=2, eubo_beta=1.0),
    "d2-stepmerge": dict(method="d2-stepmerge", merge_groups=2, mu=1, beta=0.04),
    "d2-stepmerge-mu2-exact": dict(method="d2-stepmerge", merge_groups=2, mu=2, beta=0.04, kl="exact"),
    "egspo-entropy-mass": dict(method="egspo-sa", select="entropy-mass", entropy_mass=0.5, k_steps=2, beta=0.0),
}




def toy_config(out, **kw):
    from dllmrl.training.train_config import TrainConfig

    base = dict(task="toy", num_generations=4, batch_size=8, grad_accum=1, lr=2e-2, warmup_steps=0, max_steps=2,
                lora_r=4, lora_alpha=8, lora_dropout=0.05, weight_decay=0.0, output=str(out), save_every=0,
                log_every=1, reward_workers=1)
    base.update(kw)
    return TrainConfig(**base)


def mcfg(model_dir) -> ModelConfig:
    return ModelConfig(model=model_dir, device="cpu", dtype="float32")


def lora_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("name", list(RUNS))
def test_two_steps_change_every_lora_parameter(toy_model_dir, tmp_path, name):
    trainer = Trainer(toy_config(tmp_path, **RUNS[name]), SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    before = lora_state(trainer.model)
    assert len(before) >= 12
    result = trainer.run()
    after = lora_state(trainer.model)
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged, f"parameters not trained: {unchanged}"
    rows = read_metrics(tmp_path)
    assert result.step == 2 and [r["step"] for r in rows] == [1, 2]
    assert all(r["loss"] is not None and r["grad_norm"] is not None for r in rows)  # NaN is written as null
    if name.startswith("spg"):
        assert {"elbo", "eubo", "positive"} <= set(rows[0])
    if name.startswith("d2"):
        assert rows[-1]["kl"] >= -1e-6 and "clip_ratio" in rows[0]
    if name == "egspo-entropy-mass":
        assert 0 < rows[0]["valid_slots"] <= 1  # some rows need fewer than k_steps steps


@pytest.mark.parametrize("name", ["wd1", "spg", "d2-stepmerge-mu2-exact"])
def test_resume_mid_rollout_matches_a_straight_run(toy_model_dir, tmp_path, name):
    """The masks live in the checkpointed buffer (saved field by field as plain tensors, read back with
    weights_only=True): 4 steps straight == 2 steps, then --resume for 2 more."""
    from safetensors.torch import load_file

    cfg = dict(RUNS[name], lora_dropout=0.0)
    if name in ("wd1", "spg"):
        cfg["mu"] = 4  # a rollout feeds 4 micro-steps: the stop at step 2 is mid-rollout
    straight = train(toy_config(tmp_path / "a", max_steps=4, **cfg), SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    train(toy_config(tmp_path / "b", max_steps=2, **cfg), SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    resumed = train(toy_config(tmp_path / "b", max_steps=4, resume=True, **cfg), SCFG, mcfg(toy_model_dir),
                    task=ToyLowercase())
    assert straight.step == resumed.step == 4
    a = load_file(str(tmp_path / "a" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "adapter" / "adapter_model.safetensors"))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_d2_with_more_groups_than_steps_is_a_clear_error(toy_model_dir, tmp_path):
    from dllmrl.errors import ConfigError

    with pytest.raises(ConfigError, match="--merge-groups 8 is more than --steps 4"):
        train(toy_config(tmp_path, method="d2-stepmerge", merge_groups=8, mu=1), SCFG, mcfg(toy_model_dir),
              task=ToyLowercase())
