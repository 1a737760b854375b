"""Model families, registered in ``MODELS`` under the ``model_type`` of config.json.

Each loader takes (source, ModelConfig, dtype) and returns a ``ModelAdapter``.
"""

from __future__ import annotations

import logging

import torch

from ..config import ModelConfig
from ..errors import ModelLoadError
from ..registry import MODELS
from .base import ModelAdapter

log = logging.getLogger(__name__)

# End-of-turn markers used by the chat templates of the families we know.
END_OF_TURN = ("<|eot|>", "<|eot_id|>", "<|im_end|>", "<|endoftext|>")

# LoRA targets by model_type; anything else gets peft's "all-linear".
LORA_TARGETS = {
    "modernbert": ["Wqkv", "Wo", "Wi"],
    "bert": ["query", "key", "value", "dense"],
    "gemma3_text": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


def _load_tokenizer(source: str, cfg: ModelConfig):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=cfg.trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"--model '{source}': cannot load its tokenizer ({e})") from None


def eos_ids(tokenizer) -> tuple[int, ...]:
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN if t in vocab)
    return tuple(sorted(ids))


def _mask_id(tokenizer, source: str) -> int:
    if tokenizer.mask_token_id is None:
        raise ModelLoadError(f"--model '{source}': its tokenizer has no mask token, so it cannot be a diffusion LM")
    return int(tokenizer.mask_token_id)


def load_masked_lm(source: str, cfg: ModelConfig, dtype: torch.dtype) -> ModelAdapter:
    """Any bidirectional masked LM transformers builds natively (ModernBERT, BERT, ...)."""
    from transformers import AutoModelForMaskedLM

    tok = _load_tokenizer(source, cfg)
    model = AutoModelForMaskedLM.from_pretrained(source, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    mtype = model.config.model_type
    return ModelAdapter(
        model=model, tokenizer=tok, mask_id=_mask_id(tok, source), eos_ids=eos_ids(tok), pad_id=tok.pad_token_id,
        lora_targets=LORA_TARGETS.get(mtype, "all-linear"), family=mtype,
    )


def load_bidirectional_causal(source: str, cfg: ModelConfig, dtype: torch.dtype) -> ModelAdapter:
    """A decoder-shaped model configured to attend both ways (Gemma3 with use_bidirectional_attention)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    conf = AutoConfig.from_pretrained(source)
    if not getattr(conf, "use_bidirectional_attention", False):
        raise ModelLoadError(
            f"--model '{source}' is a causal {conf.model_type} model; a diffusion LM must attend both ways "
            "(set use_bidirectional_attention in its config)"
        )
    tok = _load_tokenizer(source, cfg)
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    return ModelAdapter(
        model=model, tokenizer=tok, mask_id=_mask_id(tok, source), eos_ids=eos_ids(tok), pad_id=tok.pad_token_id,
        lora_targets=LORA_TARGETS.get(conf.model_type, "all-linear"), family=conf.model_type,
    )


def load_remote_code(source: str, cfg: ModelConfig, dtype: torch.dtype) -> ModelAdapter:
    """Escape hatch (--trust-remote-code): the repository's own modelling code, used as a masked LM."""
    from transformers import AutoModel

    tok = _load_tokenizer(source, cfg)
    try:
        model = AutoModel.from_pretrained(source, dtype=dtype, trust_remote_code=True)
    except Exception as e:  # remote code fails in many ways on newer transformers
        raise ModelLoadError(f"--model '{source}': its remote code failed to load on this transformers ({e})") from None
    return ModelAdapter(
        model=model, tokenizer=tok, mask_id=_mask_id(tok, source), eos_ids=eos_ids(tok), pad_id=tok.pad_token_id,
        supports_attention_mask=False, family="remote-code",
    )


LLADA_MASK_ID = 126336


def load_llada(source: str, cfg: ModelConfig, dtype: torch.dtype) -> ModelAdapter:
    """LLaDA (GSAI-ML/LLaDA-8B-Instruct, LLaDA-1.5): mask id 126336, logits not shifted."""
    adapter = load_remote_code(source, cfg, dtype) if cfg.trust_remote_code else _needs_remote(source, "LLaDA")
    adapter.mask_id = LLADA_MASK_ID
    adapter.family = "llada"
    adapter.lora_targets = ["q_proj", "k_proj", "v_proj"]
    return adapter


def load_dream(source: str, cfg: ModelConfig, dtype: torch.dtype) -> ModelAdapter:
    """Dream (Dream-org/Dream-v0-Instruct-7B): predicts position i+1 at i, so logits are shifted back."""
    adapter = load_remote_code(source, cfg, dtype) if cfg.trust_remote_code else _needs_remote(source, "Dream")
    adapter.shift_logits = True
    adapter.family = "dream"
    adapter.lora_targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return adapter


def _needs_remote(source: str, family: str) -> ModelAdapter:
    raise ModelLoadError(
        f"--model '{source}' is a {family} checkpoint, whose modelling code is the repository's own; "
        "pass --trust-remote-code to run it (it needs transformers 4.x)"
    )


for _t in ("modernbert", "bert", "roberta", "distilbert", "xlm-roberta", "deberta-v2", "electra"):
    MODELS.register(_t, load_masked_lm)
MODELS.register("gemma3_text", load_bidirectional_causal)
MODELS.register("remote-code", load_remote_code)
MODELS.register("llada", load_llada)
MODELS.register("Dream", load_dream)
