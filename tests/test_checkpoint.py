"""accel.py, lora.py and checkpoint.py: LoRA wrapping, atomic save / exact restore, newest lookup."""

from __future__ import annotations

import json
import random

import pytest
import torch

from dllmrl.training.accel import build_accelerator, mixed_precision_for, rank_generator
from dllmrl.training.checkpoint import (
    capture_rng, latest_checkpoint, list_checkpoints, load_checkpoint, restore_rng, save_checkpoint, save_final_adapter,
)
from dllmrl.config import ModelConfig
from dllmrl.errors import ConfigError
from dllmrl.training.lora import LoraSettings, add_lora, lora_parameters, require_4bit


def _lora_adapter(tiny_model_dir, seed=0):
    from dllmrl.models import load_model

    torch.manual_seed(seed)
    a = load_model(ModelConfig(model=tiny_model_dir, device="cpu", dtype="float32"))
    return add_lora(a, LoraSettings(r=4, alpha=8, dropout=0.0))


def test_accelerator_on_cpu_and_precision_map():
    acc = build_accelerator("cpu", "auto", grad_accum=2, seed=3)
    assert acc.device.type == "cpu" and acc.gradient_accumulation_steps == 2
    assert mixed_precision_for("bfloat16", use_cuda=True) == "bf16"
    assert mixed_precision_for("bfloat16", use_cuda=False) == "no"  # no autocast on CPU
    g1, g2 = rank_generator(acc, 1), rank_generator(acc, 1)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))
    with pytest.raises(ConfigError, match="grad-accum"):
        build_accelerator("cpu", grad_accum=0)


def test_lora_targets_and_4bit_error(tiny_model_dir):
    a = _lora_adapter(tiny_model_dir)
    params = lora_parameters(a.model)
    assert params and all(p.requires_grad for p in params.values())
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in params} == {"Wqkv", "Wo", "Wi"}
    assert not any(p.requires_grad for n, p in a.model.named_parameters() if "lora_" not in n)
    with pytest.raises(ConfigError, match="4bit"):
        require_4bit("cpu")
    with pytest.raises(ConfigError, match="lora-r"):
        LoraSettings(r=0)


def test_rng_capture_restore_roundtrip():
    g = torch.Generator().manual_seed(5)
    state = capture_rng({"g": g})
    first = (random.random(), torch.rand(2), torch.rand(2, generator=g))
    restore_rng(state, {"g": g})
    again = (random.random(), torch.rand(2), torch.rand(2, generator=g))
    assert first[0] == again[0] and torch.equal(first[1], again[1]) and torch.equal(first[2], again[2])


def test_save_load_restores_everything(tiny_model_dir, tmp_path):
    acc = build_accelerator("cpu")
    a = _lora_adapter(tiny_model_dir)
    opt = torch.optim.AdamW([p for p in a.model.parameters() if p.requires_grad], lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
    x = torch.randint(10, 50, (2, 12))
    for _ in range(2):  # move weights and optimizer moments away from their initial values
        a.model(input_ids=x).logits.sum().backward()
        opt.step(), sched.step(), opt.zero_grad()
    gen = torch.Generator().manual_seed(1)
    path = save_checkpoint(tmp_path, 2, accelerator=acc, model=a.model, optimizer=opt, scheduler=sched,
                           extra={"lam": 0.5}, rank_state={"buf": torch.arange(3)}, generators={"sample": gen})
    assert path.name == "step-0000002" and (path / "adapter" / "adapter_config.json").exists()
    assert json.loads((path / "state.json").read_text()) == {"step": 2, "extra": {"lam": 0.5}}
    saved = {n: p.detach().clone() for n, p in lora_parameters(a.model).items()}
    expected_next = torch.rand(4, generator=gen)

    b = _lora_adapter(tiny_model_dir, seed=9)  # different LoRA init
    opt_b = torch.optim.AdamW([p for p in b.model.parameters() if p.requires_grad], lr=1e-2)
    sched_b = torch.optim.lr_scheduler.LambdaLR(opt_b, lambda s: min(1.0, (s + 1) / 3))
    gen_b = torch.Generator().manual_seed(77)
    ck = load_checkpoint(latest_checkpoint(tmp_path), accelerator=acc, model=b.model, optimizer=opt_b,
                         scheduler=sched_b, generators={"sample": gen_b})
    assert ck.step == 2 and ck.extra == {"lam": 0.5} and torch.equal(ck.rank_state["buf"], torch.arange(3))
    for n, p in lora_parameters(b.model).items():
        assert torch.equal(p, saved[n]), n
    assert sched_b.last_epoch == sched.last_epoch
    assert torch.equal(torch.rand(4, generator=gen_b), expected_next)
    sa, sb = opt.state_dict()["state"], opt_b.state_dict()["state"]
    assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)


def test_incomplete_checkpoints_are_ignored(tiny_model_dir, tmp_path):
    a = _lora_adapter(tiny_model_dir)
    save_checkpoint(tmp_path, 1, model=a.model)
    save_checkpoint(tmp_path, 10, model=a.model)
    (tmp_path / "checkpoints" / ".tmp-step-0000020").mkdir()  # a crash mid-save
    (tmp_path / "checkpoints" / "step-0000030").mkdir()  # no state.json: incomplete
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000001", "step-0000010"]
    assert latest_checkpoint(tmp_path).name == "step-0000010"
    save_checkpoint(tmp_path, 11, model=a.model, keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-0000010", "step-0000011"]
    dest = save_final_adapter(tmp_path, a.model)
    assert dest == tmp_path / "adapter" and (dest / "adapter_model.safetensors").exists()
    assert latest_checkpoint(tmp_path / "nothing") is None


class _Payload:
    """Any class: unpickling it means importing and running code named by the file."""


def _saved_checkpoint(tiny_model_dir, tmp_path):
    acc = build_accelerator("cpu")
    a = _lora_adapter(tiny_model_dir)
    opt = torch.optim.AdamW([p for p in a.model.parameters() if p.requires_grad], lr=1e-2)
    return acc, a, opt, save_checkpoint(tmp_path, 3, accelerator=acc, model=a.model, optimizer=opt)


@pytest.mark.parametrize("name", ["trainer_state.pt", "rank-0.pt"])
def test_a_checkpoint_holding_a_pickled_object_is_refused(tiny_model_dir, tmp_path, name):
    from dllmrl.errors import DataError

    acc, a, opt, path = _saved_checkpoint(tiny_model_dir, tmp_path)
    good = torch.load(path / name, weights_only=True)
    assert good["format"] == 2  # plain data: tensors, numbers, strings
    torch.save({**good, "payload": _Payload()}, path / name)
    with pytest.raises(DataError, match="pickled Python objects.*could run code"):
        load_checkpoint(path, accelerator=acc, model=a.model, optimizer=opt)


def test_an_old_format_checkpoint_is_refused_with_one_line(tiny_model_dir, tmp_path):
    from dllmrl.errors import DataError

    acc, a, opt, path = _saved_checkpoint(tiny_model_dir, tmp_path)
    state = torch.load(path / "trainer_state.pt", weights_only=True)
    del state["format"]  # what dllmrl wrote before format 2 (its rank files held numpy arrays: refused as pickles)
    torch.save(state, path / "trainer_state.pt")
    with pytest.raises(DataError, match="not a dllmrl checkpoint of format 2.*new --output") as e:
        load_checkpoint(path, accelerator=acc, model=a.model, optimizer=opt)
    assert "\n" not in str(e.value)


def test_rng_states_are_saved_as_tensors(tiny_model_dir, tmp_path):
    _, _, _, path = _saved_checkpoint(tiny_model_dir, tmp_path)
    rng = torch.load(path / "rank-0.pt", weights_only=True)["rng"]
    assert isinstance(rng["python"]["state"], torch.Tensor) and isinstance(rng["numpy"]["keys"], torch.Tensor)
    assert isinstance(rng["torch"], torch.Tensor)
