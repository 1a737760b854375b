"""Train a small reward model on a diffusion LM's own samples, labelled by a task's verifier.

    dllmrl reward-model sudoku --model checkpoints/tiny-llada --output checkpoints/tiny-llada-reward

The reward model is a ModernBERT sequence classifier (one output) that shares the DLLM's
tokenizer, so reward guidance (dllmrl.sampling.guidance) can feed it the DLLM's token distributions. It
reads the whole sequence the sampler produced (prompt and completion ids) and predicts the
logit of "this completion is correct" (or the task's reward, with --target reward).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from dllmrl.config import ModelConfig, RewardModelConfig, SamplerConfig  # noqa: F401  (RewardModelConfig: API)
from dllmrl.sampling.sampler import sample

log = logging.getLogger(__name__)


def collect_samples(task, adapter, examples, scfg: SamplerConfig, cfg: RewardModelConfig, prompt_style: str,
                    on_progress: Callable[[int], None] | None = None) -> tuple[list[list[int]], list[float], list[int]]:
    """Sample completions and label them; returns (token rows, labels, prompt index per row)."""
    from dllmrl.tasks.base import response_text, total_reward

    gen = torch.Generator(device=adapter.device).manual_seed(cfg.seed)
    rows, labels, owner = [], [], []
    per_batch = max(1, cfg.batch_size // cfg.samples_per_prompt)
    scfg = SamplerConfig(**{**asdict(scfg), "temperature": cfg.temperature})
    prefill = task.prefill_for(prompt_style)
    for start in range(0, len(examples), per_batch):
        chunk = list(range(start, min(start + per_batch, len(examples))))
        texts = [adapter.render_prompt(examples[i].prompt, prefill=prefill) for i in chunk for _ in range(cfg.samples_per_prompt)]
        ids, attn = adapter.encode(texts)
        traj = sample(adapter, ids, attn, scfg, generator=gen)
        for j, i in enumerate(i for i in chunk for _ in range(cfg.samples_per_prompt)):
            completion = adapter.decode_completion(traj.completion_ids[j])
            response = response_text(task, completion, prompt_style)
            if cfg.target == "correct":
                labels.append(float(task.verify(examples[i], response)))
            else:
                labels.append(total_reward(task, examples[i], response)[0])
            rows.append(traj.tokens[j][traj.attention_mask[j].bool()].tolist())
            owner.append(i)
        if on_progress:
            on_progress(len(chunk))
    return rows, labels, owner


def build_reward_model(tokenizer, cfg: RewardModelConfig, max_len: int):
    from transformers import ModernBertConfig, ModernBertForSequenceClassification

    conf = ModernBertConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, intermediate_size=2 * cfg.hidden,
        num_hidden_layers=cfg.layers, num_attention_heads=max(1, cfg.hidden // 32), num_labels=1,
        max_position_embeddings=max_len, layer_types=["full_attention"] * cfg.layers,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        cls_token_id=tokenizer.bos_token_id, sep_token_id=tokenizer.eos_token_id, classifier_pooling="mean",
    )
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        return ModernBertForSequenceClassification(conf)


def _batch(rows: list[list[int]], pad: int) -> tuple[Tensor, Tensor]:
    from dllmrl.models.base import left_pad

    return left_pad(rows, pad)  # as the sampler lays sequences out


def train_reward_model(model, rows, labels, train_idx, cfg: RewardModelConfig, pad: int,
                       on_epoch: Callable[[int, float], None] | None = None) -> None:
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    rng = random.Random(cfg.seed)
    model.train()
    for epoch in range(cfg.epochs):
        order = list(train_idx)
        rng.shuffle(order)
        total = 0.0
        for s in range(0, len(order), cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            ids, attn = _batch([rows[i] for i in idx], pad)
            y = torch.tensor([labels[i] for i in idx])
            out = model(input_ids=ids, attention_mask=attn).logits[:, 0]
            loss = F.binary_cross_entropy_with_logits(out, y) if cfg.target == "correct" else F.mse_loss(out, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        if on_epoch:
            on_epoch(epoch, total / max(1, len(order)))
    model.eval()


@torch.no_grad()
def evaluate_reward_model(model, rows, labels, idx, cfg: RewardModelConfig, pad: int) -> dict[str, float]:
    if not idx:
        return {}
    preds = []
    for s in range(0, len(idx), cfg.batch_size):
        ids, attn = _batch([rows[i] for i in idx[s:s + cfg.batch_size]], pad)
        preds.append(model(input_ids=ids, attention_mask=attn).logits[:, 0])
    p = torch.cat(preds)
    y = torch.tensor([labels[i] for i in idx])
    if cfg.target == "correct":
        return {"heldout_accuracy": float(((p > 0).float() == y).float().mean()), "heldout_positive_rate": float(y.mean())}
    return {"heldout_mse": float(F.mse_loss(p, y))}


def make_reward_model(task_name: str, model_cfg: ModelConfig, scfg: SamplerConfig, cfg: RewardModelConfig,
                      prompt_style: str, output: str | Path, on_progress=None, on_epoch=None) -> dict:
    """Sample, label, train, save. Returns a summary (also written to the output's dllmrl_reward.json)."""
    from dllmrl.tasks.base import get_task

    from dllmrl.models import load_model

    task = get_task(task_name)
    adapter = load_model(model_cfg)
    train = task.load("train", prompt_style=prompt_style)
    examples = [train[i] for i in range(min(cfg.num_prompts, len(train)))]
    rows, labels, owner = collect_samples(task, adapter, examples, scfg, cfg, prompt_style, on_progress)
    n_hold = int(len(examples) * cfg.holdout)
    hold = [i for i, o in enumerate(owner) if o < n_hold]
    fit = [i for i, o in enumerate(owner) if o >= n_hold]
    pad = adapter.pad_id if adapter.pad_id is not None else 0
    max_len = max(len(r) for r in rows) + 8
    rm = build_reward_model(adapter.tokenizer, cfg, max_len)
    train_reward_model(rm, rows, labels, fit, cfg, pad, on_epoch)
    summary = {"task": task_name, "dllm": model_cfg.model, "prompt_style": prompt_style, "samples": len(rows),
               "positive_rate": sum(labels) / len(labels), **evaluate_reward_model(rm, rows, labels, hold, cfg, pad),
               "config": asdict(cfg), "sampler": asdict(scfg)}
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    rm.save_pretrained(out)
    adapter.tokenizer.save_pretrained(out)
    (out / "dllmrl_reward.json").write_text(json.dumps(summary, indent=2))
    return summary
