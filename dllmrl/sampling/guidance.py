"""Reward-guided sampling at test time: EntRGi (arXiv 2602.05000) and its baselines.

At each denoising step the DLLM's logits phi at still-masked positions are nudged up the
gradient of a reward model before the usual candidate selection and remasking:

    q = softmax(phi);  soft = q @ E;  hard = E[x ~ q];  w = H(q) / log|V|   (EntRGi)
    e_hat = soft + sg(w * (hard - soft))     # value: (1-w) soft + w hard; gradient: through soft
    phi <- phi + lr * d R(e_hat) / d phi     # --guidance-steps times

Baselines from the same code: expectation (w = 0), aps / straight-through (w = 1), and
best-of-n (N unguided samples, keep the best by reward) at the same number of reward calls.
The reward model must share the DLLM's vocabulary (E is its input-embedding table).
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from dllmrl.config import GUIDANCE_METHODS, GuidanceConfig, SamplerConfig  # noqa: F401  (GuidanceConfig: API)
from dllmrl.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

METHODS = GUIDANCE_METHODS


def mix_weight(q: Tensor, method: str) -> Tensor:
    """(..., V) probabilities -> (...) weight of the hard embedding: 0 expectation, 1 aps, H(q)/log V entrgi."""
    if method == "expectation":
        return torch.zeros(q.shape[:-1], dtype=q.dtype, device=q.device)
    if method == "aps":
        return torch.ones(q.shape[:-1], dtype=q.dtype, device=q.device)
    logq = torch.log(q.clamp_min(1e-30))
    ent = -torch.where(q > 0, q * logq, torch.zeros_like(q)).sum(-1)
    return (ent / math.log(q.shape[-1])).clamp(0, 1)


def guided_embeddings(
    phi: Tensor, tokens: Tensor, masked: Tensor, table: Tensor, method: str, generator: torch.Generator | None
) -> Tensor:
    """Reward-model inputs (B, G, H): e_hat at masked positions, the real token embedding elsewhere.

    phi (B, G, V) logits (differentiable), tokens (B, G) current ids, masked (B, G) bool, table (V, H).
    """
    q = F.softmax(phi.float(), -1)  # (B, G, V)
    soft = q @ table.float()  # (B, G, H): continuous relaxation
    u = torch.rand(q.shape, generator=generator, device=q.device, dtype=torch.float64)
    sampled = (torch.log(q.detach().double().clamp_min(1e-300)) - torch.log(-torch.log(u))).argmax(-1)  # x ~ q (Gumbel-max)
    hard = table[sampled].float()  # (B, G, H)
    w = mix_weight(q.detach(), method).unsqueeze(-1)  # (B, G, 1)
    e_hat = soft + (w * (hard - soft)).detach()  # value (1-w) soft + w hard, gradient of soft
    real = table[tokens].float()
    return torch.where(masked.unsqueeze(-1), e_hat, real).to(table.dtype)


class RewardModel:
    """A sequence-classification model used as a differentiable scalar reward; counts rows scored."""

    def __init__(self, model: Any, tokenizer: Any = None):
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.calls = 0

    @property
    def embedding_table(self) -> Tensor:
        return self.model.get_input_embeddings().weight

    def score_embeds(self, embeds: Tensor, attention_mask: Tensor) -> Tensor:
        self.calls += embeds.shape[0]
        return self.model(inputs_embeds=embeds, attention_mask=attention_mask).logits[:, 0].float()

    @torch.no_grad()
    def score_ids(self, ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.score_embeds(self.embedding_table[ids], attention_mask)


class LogitGuide:
    """Callable the sampler applies to the generation region's logits at each denoising step."""

    def __init__(self, reward: RewardModel, method: str, steps: int, lr: float, mask_id: int,
                 generator: torch.Generator | None = None):
        self.reward, self.method, self.steps, self.lr = reward, method, steps, lr
        self.mask_id, self.generator = mask_id, generator

    def __call__(self, logits: Tensor, x: Tensor, attention_mask: Tensor, prompt_len: int) -> Tensor:
        """logits (B, L, V) -> logits with the generation region's masked positions guided."""
        gen_tokens = x[:, prompt_len:]
        masked = gen_tokens == self.mask_id
        if not bool(masked.any()):
            return logits
        table = self.reward.embedding_table
        prompt_emb = table[x[:, :prompt_len]]
        phi = logits[:, prompt_len:].detach().float()
        finite = torch.isfinite(phi)
        with torch.enable_grad():
            for _ in range(self.steps):
                phi = phi.detach().requires_grad_(True)
                gen_emb = guided_embeddings(phi, gen_tokens, masked, table, self.method, self.generator)
                r = self.reward.score_embeds(torch.cat([prompt_emb, gen_emb], 1), attention_mask).sum()
                (grad,) = torch.autograd.grad(r, phi)
                # only masked positions move; -inf logits (the mask token) stay -inf
                step = torch.where(masked.unsqueeze(-1) & finite, self.lr * grad, torch.zeros_like(grad))
                phi = phi.detach() + step
        out = logits.clone()
        out[:, prompt_len:] = phi.to(logits.dtype)
        return out


def check_vocabularies(dllm: Any, reward: RewardModel) -> None:
    v_dllm, v_rm = dllm.vocab_size, reward.embedding_table.shape[0]
    same = v_dllm == v_rm
    if same and dllm.tokenizer is not None and reward.tokenizer is not None:
        same = dllm.tokenizer.get_vocab() == reward.tokenizer.get_vocab()
    if not same:
        raise ConfigError(
            f"--reward-model must share the diffusion model's vocabulary (guidance feeds it the DLLM's token "
            f"distributions); the DLLM has {v_dllm} tokens, the reward model {v_rm}"
            + ("" if v_dllm != v_rm else " with a different token mapping")
        )


def load_reward_model(name: str, device: torch.device, dtype: torch.dtype) -> RewardModel:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from dllmrl.models.loading import resolve_source

    source = resolve_source(name, what="--reward-model")
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source, dtype=dtype)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"--reward-model '{name}' could not be loaded as a sequence classifier: {e}") from None
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError):
        tok = None  # vocabularies are then compared by size only
        log.warning("--reward-model '%s' has no tokenizer; checking its vocabulary by size only", name)
    if model.config.num_labels != 1:
        raise ModelLoadError(f"--reward-model '{name}' has {model.config.num_labels} outputs; a reward model returns one scalar")
    return RewardModel(model.to(device), tok)


def guided_sample(
    adapter: Any, prompt_ids: Tensor, attention_mask: Tensor, scfg: SamplerConfig, gcfg: GuidanceConfig,
    reward: RewardModel | None, *, generator: torch.Generator | None = None,
    guidance_generator: torch.Generator | None = None, on_step: Callable | None = None,
):
    """Sample with the configured guidance; returns a Trajectory (best-of-n: the winners' trajectories)."""
    from dllmrl.sampling.sampler import sample

    if gcfg.guidance == "none":
        return sample(adapter, prompt_ids, attention_mask, scfg, generator=generator, on_step=on_step)
    assert reward is not None
    if gcfg.guidance == "best-of-n":
        return best_of_n(adapter, prompt_ids, attention_mask, scfg, reward, gcfg.candidates(scfg), generator=generator)
    guide = LogitGuide(reward, gcfg.guidance, gcfg.guidance_steps, gcfg.guidance_lr, adapter.mask_id, guidance_generator)
    return sample(adapter, prompt_ids, attention_mask, scfg, generator=generator, guide=guide, on_step=on_step)


def best_of_n(adapter: Any, prompt_ids: Tensor, attention_mask: Tensor, scfg: SamplerConfig, reward: RewardModel,
              n: int, *, generator: torch.Generator | None = None):
    """n samples per prompt (temperature from scfg; use > 0 for diversity), keep the highest reward."""
    from dllmrl.sampling.sampler import sample
    from dllmrl.sampling.trajectory import Trajectory

    B = prompt_ids.shape[0]
    trajs, scores = [], []
    for _ in range(n):
        t = sample(adapter, prompt_ids, attention_mask, scfg, generator=generator)
        trajs.append(t)
        scores.append(reward.score_ids(t.tokens, t.attention_mask))
    best = torch.stack(scores, 1).argmax(1)  # (B,)
    fields = {}
    for name, v in trajs[0].__dict__.items():
        if isinstance(v, Tensor):
            stacked = torch.stack([getattr(t, name) for t in trajs], 1)  # (B, n, ...)
            fields[name] = stacked[torch.arange(B), best]
        else:
            fields[name] = v
    fields["nfe"] = sum(t.nfe for t in trajs)
    return Trajectory(**fields)
