"""The trainer end to end on a tiny model and a toy task: parameters change, exact resume, Ctrl-C,
ablation paths, learning, two processes, and the `dllmrl train` command.

The toy task rewards lowercase letters in an 8-character completion. The test model is the
session's tiny ModernBERT with its output LayerNorm gain raised 10x: a random model's logits are
so flat (initializer_range 0.02, tied embeddings) that no LoRA on its attention and MLP can move
the output distribution far (supervised, the lowercase mass stalls at 0.27); with the gain the
same LoRA reaches 0.85, so a few dozen RL steps visibly learn.
"""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dllmrl.config import ModelConfig, SamplerConfig
from dllmrl.errors import ConfigError
from dllmrl.training.metrics import read_metrics
from dllmrl.training.train_config import TrainConfig, resolve_method
from dllmrl.training.trainer import Trainer, TrainingInterrupted, train
from toy_tasks import TOY_GEN_LEN, ToyLowercase




SCFG = SamplerConfig(gen_len=TOY_GEN_LEN, steps=4, block_len=TOY_GEN_LEN, temperature=1.0)


def toy_config(out, **kw) -> TrainConfig:
    base = dict(task="toy", method="egspo-sa", k_steps=2, num_generations=4, batch_size=8, grad_accum=1, lr=2e-2,
                warmup_steps=0, max_steps=2, lora_r=4, lora_alpha=8, lora_dropout=0.05, weight_decay=0.0,
                output=str(out), save_every=0, log_every=1, reward_workers=1)
    base.update(kw)
    return TrainConfig(**base)


def mcfg(model_dir) -> ModelConfig:
    return ModelConfig(model=model_dir, device="cpu", dtype="float32")


def lora_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def saved_adapter(run_dir) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(run_dir) / "adapter" / "adapter_model.safetensors"))


# ---------------------------------------------------------------------------------------------- training runs
def test_two_steps_change_every_lora_parameter(toy_model_dir, tmp_path):
    trainer = Trainer(toy_config(tmp_path, beta=0.04), SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    before = lora_state(trainer.model)
    assert len(before) >= 12  # A and B of Wqkv, Wo, Wi in two layers
    result = trainer.run()
    after = lora_state(trainer.model)
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged, f"parameters not trained: {unchanged}"
    assert result.step == 2 and (tmp_path / "adapter" / "adapter_config.json").exists()
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward", "reward_std", "accuracy", "reward/lowercase", "reward/correct", "kl", "clip_ratio",
                "entropy_selected", "greedy_reward", "lambda", "lr", "rollout_s", "reward_s", "update_s",
                "tokens_per_s", "loss", "grad_norm", "peak_rss_mb"):
        assert key in rows[0], key
    assert rows[0]["kl"] is not None and rows[1]["kl"] > 0  # the reference forward ran (β > 0)
    from dllmrl.plot import DEFAULT_METRIC

    assert DEFAULT_METRIC in rows[0]  # `dllmrl plot` with no --metric plots what the trainer writes
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["train"]["method"] == "egspo-sa" and cfg["train"]["lam"] == 1.0 and cfg["train"]["epsilon"] == 0.2
    assert cfg["effective_batch"] == 8 and cfg["sampler"]["steps"] == 4


@pytest.mark.parametrize("method, extra", [("egspo-sa", dict(k_steps=4, beta=0.04)),
                                           ("diffu-grpo", dict(mu=4, beta=0.04))])
def test_resume_mid_rollout_matches_a_straight_run(toy_model_dir, tmp_path, method, extra):
    """4 steps straight == 2 steps, then --resume for 2 more (a rollout feeds 4 steps: the stop is mid-rollout)."""
    cfg = dict(method=method, lora_dropout=0.1, **extra)  # dropout: the global RNG must be restored too
    straight = train(toy_config(tmp_path / "a", max_steps=4, **cfg), SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    train(toy_config(tmp_path / "b", max_steps=2, **cfg), SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    resumed = train(toy_config(tmp_path / "b", max_steps=4, resume=True, **cfg), SCFG, mcfg(toy_model_dir),
                    task=ToyLowercase())
    assert straight.step == resumed.step == 4
    a, b = saved_adapter(tmp_path / "a"), saved_adapter(tmp_path / "b")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    ra, rb = read_metrics(tmp_path / "a"), read_metrics(tmp_path / "b")
    assert [r["step"] for r in rb] == [1, 2, 3, 4]
    assert [r["loss"] for r in ra] == pytest.approx([r["loss"] for r in rb], abs=1e-6)


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(toy_model_dir, tmp_path):
    def interrupt(report):
        if report.step == 1:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted, match="step 1.*--resume"):
        train(toy_config(tmp_path), SCFG, mcfg(toy_model_dir), task=ToyLowercase(), on_step=interrupt)
    assert (tmp_path / "checkpoints" / "step-0000001" / "state.json").exists()
    with pytest.raises(ConfigError, match="already holds a run"):
        train(toy_config(tmp_path), SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    with pytest.raises(ConfigError, match="other settings.*--lr"):
        train(toy_config(tmp_path, resume=True, lr=1.0), SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    done = train(toy_config(tmp_path, resume=True), SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    assert done.step == 2 and [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


@pytest.mark.parametrize("extra", [
    dict(select="random", eos_limit=True, kl="exact", aggregation="mean", lambda_halve_every=1, step_reward="correct"),
    dict(select="uniform", eos_limit=True, method="egspo", eval_every=2, eval_limit=4, save_every=1),
    dict(method="diffu-grpo", mu=2, kl="exact"),
])
def test_ablation_paths_run(toy_model_dir, tmp_path, extra):
    cfg = toy_config(tmp_path, **{"max_steps": 4, "beta": 0.04, **extra})
    result = train(cfg, SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    rows = read_metrics(tmp_path)
    assert result.step == 4 and len(rows) == 4
    assert all(r["kl"] is not None and r["kl"] >= -1e-6 for r in rows)  # both KL forms are >= 0
    if extra.get("lambda_halve_every"):
        assert [r["lambda"] for r in rows] == [1.0, 1.0, 0.25, 0.25]  # λ at each rollout (steps 0 and 2)
    if extra.get("eval_every"):
        assert "eval_accuracy" in rows[1] and "eval_accuracy" not in rows[0]
        assert len(list((tmp_path / "checkpoints").iterdir())) == 4


def test_mean_reward_rises_on_the_toy_task(toy_model_dir, tmp_path):
    cfg = toy_config(tmp_path, max_steps=24, grad_accum=2, lora_dropout=0.0, beta=0.0)
    train(cfg, SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    per_rollout = {r["rollout"]: r["reward"] for r in read_metrics(tmp_path)}
    rewards = [per_rollout[k] for k in sorted(per_rollout)]
    assert len(rewards) == 24
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 0.25, rewards


# ---------------------------------------------------------------------------------------------- two processes
def _two_process_worker(model_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    from accelerate.state import AcceleratorState, GradientState

    # The forked child inherits the parent's single-process accelerate singletons from earlier tests.
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    rank = torch.distributed.get_rank()  # the debug launcher has initialised the gloo group
    res = train(toy_config(out, max_steps=2, batch_size=4, num_generations=2, beta=0.04), SCFG, mcfg(model_dir),
                task=ToyLowercase())
    torch.save({"step": res.step, "rank": rank}, Path(out) / f"done-{rank}.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_cpu_processes_stay_in_sync(toy_model_dir, tmp_path, monkeypatch):
    """accelerate's debug launcher (gloo), on a free port: both ranks end with identical parameters."""
    from accelerate.utils import PrepareForLaunch, patch_environment
    from torch.multiprocessing import start_processes

    import dllmrl.training.trainer as trainer_mod

    finals: dict[int, dict[str, torch.Tensor]] = {}
    real_save = trainer_mod.save_final_adapter

    def keep_final(run_dir, model, accelerator=None, tokenizer=None):  # every rank writes its own copy
        state = {n: p.detach().clone() for n, p in accelerator.unwrap_model(model).named_parameters() if "lora_" in n}
        torch.save(state, Path(run_dir) / f"params-{accelerator.process_index}.pt")
        return real_save(run_dir, model, accelerator, tokenizer)

    monkeypatch.setattr(trainer_mod, "save_final_adapter", keep_final)
    with patch_environment(world_size=2, master_addr="127.0.0.1", master_port=str(_free_port()),
                           accelerate_mixed_precision="no", accelerate_use_cpu="yes", gloo_socket_ifname="lo",
                           accelerate_debug_rdv_file=str(tmp_path / "rdv")):
        start_processes(PrepareForLaunch(_two_process_worker, debug=True), args=(toy_model_dir, str(tmp_path)),
                        nprocs=2, start_method="fork")
    for r in (0, 1):
        assert torch.load(tmp_path / f"done-{r}.pt")["step"] == 2
        finals[r] = torch.load(tmp_path / f"params-{r}.pt")
    init = Trainer(toy_config(tmp_path / "init"), SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    start = lora_state(init.model)
    for n in finals[0]:
        assert torch.equal(finals[0][n], finals[1][n]), n
    assert any(not torch.equal(finals[0][n], start[n]) for n in start)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["processes"] == 2 and cfg["effective_batch"] == 8
    rows = read_metrics(tmp_path)  # rank 0 only writes
    assert [r["step"] for r in rows] == [1, 2]


# ---------------------------------------------------------------------------------------------- config
def test_config_errors_say_the_fix():
    with pytest.raises(ConfigError, match="multiple of --num-generations 8; .*--batch-size 8"):
        TrainConfig(batch_size=12)
    with pytest.raises(ConfigError, match="at least 2"):
        TrainConfig(num_generations=1, batch_size=1)
    with pytest.raises(ConfigError, match="egspo-sa"):
        resolve_method(TrainConfig(method="egspo", lam=0.5))
    with pytest.raises(ConfigError, match="grad-accum 3 does not divide; pick a --grad-accum that divides 8"):
        resolve_method(TrainConfig(k_steps=8, grad_accum=3))
    with pytest.raises(ConfigError, match="--kl"):
        TrainConfig(kl="k2")
    with pytest.raises(Exception, match="did you mean 'entropy'"):
        resolve_method(TrainConfig(select="entropi"))
    r = resolve_method(TrainConfig(method="diffu-grpo", grad_accum=2))
    assert (r.epsilon, r.epsilon_high, r.mu, r.lam) == (0.5, 0.5, 12, 0.0)
    assert resolve_method(replace(TrainConfig(), lam=0.5)).lam == 0.5


def test_resume_without_checkpoint_is_refused(toy_model_dir, tmp_path):
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        train(toy_config(tmp_path, resume=True), SCFG, mcfg(toy_model_dir), task=ToyLowercase())


# ---------------------------------------------------------------------------------------------- the command
def _cli_task() -> str:
    from dllmrl.registry import TASKS

    if "toy-lowercase" not in TASKS:
        TASKS.register("toy-lowercase", ToyLowercase)
    return "toy-lowercase"


def _cli_args(model_dir, out, *extra) -> list[str]:
    return ["train", _cli_task(), "--model", model_dir, "-o", str(out), "--device", "cpu", "--max-steps", "2",
            "--k-steps", "2", "-G", "4", "--batch-size", "8", "--grad-accum", "1", "--gen-len", "8", "--steps", "4",
            "--block-len", "8", "--temperature", "1", "--lora-r", "4", "--warmup-steps", "0", "--log-every", "1",
            "--reward-workers", "1", *extra]


def test_cli_trains_prints_config_and_tables(toy_model_dir, tmp_path):
    from typer.testing import CliRunner

    from dllmrl.cli import app

    r = CliRunner().invoke(app, _cli_args(toy_model_dir, tmp_path / "run"), env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert "dllmrl train toy-lowercase" in out and "epsilon_high" in out  # the resolved config, once
    assert out.count("dllmrl train toy-lowercase") == 1
    assert "step 2" in out and "done" in out and "--adapter" in out
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["sampler"]["gen_len"] == 8 and saved["train"]["lam"] == 1.0
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "6"], "--batch-size 6 is not a multiple of --num-generations 4"),
    (["--method", "egspoo"], "did you mean 'egspo'"),
    (["--method", "egspo", "--lambda", "1"], "use --method egspo-sa"),
    (["--select", "entropyy"], "did you mean 'entropy'"),
    (["--grad-accum", "3"], "pick a --grad-accum that divides 2"),
    (["--load-in-4bit"], "needs a CUDA GPU"),
    (["--resume"], "holds no checkpoint"),
    (["--gen-len", "6"], "--gen-len 6 is not divisible by --block-len 8"),
])
def test_cli_errors_are_one_line(toy_model_dir, tmp_path, args, message):
    from typer.testing import CliRunner

    from dllmrl.cli import app

    r = CliRunner().invoke(app, _cli_args(toy_model_dir, tmp_path / "run", *args), env={"COLUMNS": "200"})
    assert r.exit_code == 1, r.output
    assert message in " ".join(r.output.split()) and "Traceback" not in r.output


def test_every_config_field_has_an_option():
    import dataclasses
    import inspect

    from dllmrl.commands.train import train_command

    params = set(inspect.signature(train_command).parameters)
    for cls in (TrainConfig, SamplerConfig, ModelConfig):
        for f in dataclasses.fields(cls):
            assert f.name in params, f"{cls.__name__}.{f.name} has no option in dllmrl train"


def test_sampler_defaults_come_from_the_model_but_not_its_eval_temperature(tmp_path):
    from dllmrl.training.trainer import training_sampler_config

    (tmp_path / "dllmrl.json").write_text(json.dumps({"gen_len": 16, "steps": 8, "block_len": 16, "temperature": 0.0}))
    none = dict(gen_len=None, steps=None, block_len=None, temperature=None)
    s = training_sampler_config(str(tmp_path), **none)
    assert (s.gen_len, s.steps, s.block_len, s.temperature) == (16, 8, 16, 0.9)  # eval's greedy 0 is not used
    assert training_sampler_config(str(tmp_path), **{**none, "steps": 4}).steps == 4  # the command line wins
    (tmp_path / "dllmrl.json").write_text(json.dumps({"train_temperature": 0.5}))
    s = training_sampler_config(str(tmp_path), **none)
    assert (s.gen_len, s.steps, s.block_len, s.temperature) == (256, 128, 32, 0.5)  # the paper's, model's train temp
    with pytest.raises(ConfigError, match="identical"):
        training_sampler_config(str(tmp_path), **{**none, "temperature": 0.0})


def test_deepspeed_plugin_gets_our_batch_accumulation_and_clipping():
    """Without a dataloader accelerate cannot infer DeepSpeed's micro-batch: the trainer fills it (stub plugin)."""
    from types import SimpleNamespace

    from dllmrl.training.trainer import _configure_deepspeed

    def acc_with(ds):
        return SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=ds)),
                               gradient_accumulation_steps=1)

    acc = acc_with({"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
                    "gradient_clipping": 1.0})
    _configure_deepspeed(acc, TrainConfig(batch_size=16, grad_accum=4, max_grad_norm=0.2))
    ds = acc.state.deepspeed_plugin.deepspeed_config
    assert (ds["train_micro_batch_size_per_gpu"], ds["gradient_accumulation_steps"], ds["gradient_clipping"]) == (16, 4, 0.2)
    assert acc.gradient_accumulation_steps == 4
    with pytest.raises(ConfigError, match="gradient_accumulation_steps 2 but --grad-accum is 4"):
        _configure_deepspeed(acc_with({"gradient_accumulation_steps": 2}), TrainConfig(grad_accum=4))


def test_training_can_start_from_a_saved_adapter(toy_model_dir, tmp_path):
    from peft import get_peft_model_state_dict

    train(toy_config(tmp_path / "first", save_every=0), SCFG, mcfg(toy_model_dir), task=ToyLowercase())
    start = replace(mcfg(toy_model_dir), adapter=str(tmp_path / "first" / "adapter"))
    trainer = Trainer(toy_config(tmp_path / "second"), SCFG, start, task=ToyLowercase())
    loaded = get_peft_model_state_dict(trainer.model)
    saved = saved_adapter(tmp_path / "first")
    assert loaded.keys() == saved.keys() and all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert all(p.requires_grad for n, p in trainer.model.named_parameters() if "lora_" in n)
    assert trainer.run().step == 2


def test_reward_weight_overrides_the_packs_weights_and_names_unknown_rewards():
    """--reward-weight correct=1 makes the Sudoku training reward count solved puzzles (givens included)."""
    from dllmrl.commands.train import parse_reward_weights
    from dllmrl.errors import ConfigError
    from dllmrl.training.rollout import Scorer
    from dllmrl.tasks.base import get_task

    task = get_task("sudoku")
    ex = task.load("test", prompt_style="compact")[0]
    puzzle, solution = ex.target["puzzle"], ex.target["solution"]
    given = next(i for i, c in enumerate(puzzle) if c != "0")
    # every blank right, one given overwritten: cell accuracy 1, not solved
    bad = list(solution)
    bad[given] = str(int(solution[given]) % 4 + 1)
    wrong_given = "".join(bad)
    plain = Scorer(task).score([ex, ex], [solution, wrong_given])
    assert [s.total for s in plain] == [1.0, 1.0]  # the reference reward cannot tell them apart
    weighted = Scorer(task, weights=dict(parse_reward_weights(["correct=1"]))).score([ex, ex], [solution, wrong_given])
    assert [s.total for s in weighted] == [2.0, 1.0]
    assert weighted[1].parts == {"cell_accuracy": 1.0, "correct": 0.0} and not weighted[1].correct
    with pytest.raises(ConfigError, match="unknown reward"):
        Scorer(task, weights={"corect": 1.0})
    with pytest.raises(ConfigError, match="NAME=WEIGHT"):
        parse_reward_weights(["correct"])
