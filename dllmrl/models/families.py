"""Model families, registered in ``MODELS`` under the ``model_type`` of config.json.

Each loader takes (source, ModelConfig, dtype) and returns a ``ModelAdapter``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from dllmrl.config import ModelConfig
from dllmrl.errors import ModelLoadError
from dllmrl.registry import MODELS
from dllmrl.models.base import ModelAdapter
from dllmrl.models.loading import from_pretrained_kwargs

log = logging.getLogger(__name__)

# End-of-turn markers used by the chat templates of the families we know.
END_OF_TURN = ("<|eot|>", "<|eot_id|>", "<|im_end|>", "<|endoftext|>")

# LoRA targets by model_type; anything else gets peft's "all-linear".
LORA_TARGETS = {
    "modernbert": ["Wqkv", "Wo", "Wi"],
    "bert": ["query", "key", "value", "dense"],
    "gemma3_text": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    # LLaDA: what EGSPO's training script's Llama names (q/k/v/o/gate/up/down_proj) match in LLaDA's
    # blocks, which have no o/gate/down_proj: so the paper's adapters (d1 used q/k/v only). The block's
    # other Linears are attn_out, ff_proj and ff_out; a bare "ff_out" would also match the 126k-wide
    # output layer model.transformer.ff_out, so widen with a regex rather than that name.
    "llada": ["q_proj", "k_proj", "v_proj", "up_proj"],
    "Dream": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
# The published LLaDA checkpoints' mask token, "<|mdm_mask|>": the one definition (llada.py imports it), kept
# here so that choosing a family does not import the model code.
LLADA_MASK_ID = 126336


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


def _mask_id(tokenizer, source: str, config: Any = None) -> int:
    # LLaDA's tokenizer declares no mask token; its config (or our default for it) carries the id.
    if tokenizer.mask_token_id is not None:
        return int(tokenizer.mask_token_id)
    for name in ("mask_token_id", "mask_id"):
        if getattr(config, name, None) is not None:
            return int(getattr(config, name))
    if getattr(config, "model_type", None) == "llada":
        return LLADA_MASK_ID
    raise ModelLoadError(f"--model '{source}': neither its tokenizer nor its config names a mask token, so it cannot be a diffusion LM")


def load_masked_lm(source: str, cfg: ModelConfig, dtype: torch.dtype) -> ModelAdapter:
    """Any bidirectional masked LM transformers builds natively (ModernBERT, BERT, ...)."""
    from transformers import AutoModelForMaskedLM

    tok = _load_tokenizer(source, cfg)
    model = AutoModelForMaskedLM.from_pretrained(source, trust_remote_code=cfg.trust_remote_code,
                                                 **from_pretrained_kwargs(dtype))
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
    model = AutoModelForCausalLM.from_pretrained(source, **from_pretrained_kwargs(dtype))
    return ModelAdapter(
        model=model, tokenizer=tok, mask_id=_mask_id(tok, source), eos_ids=eos_ids(tok), pad_id=tok.pad_token_id,
        lora_targets=LORA_TARGETS.get(conf.model_type, "all-linear"), family=conf.model_type,
    )


def load_remote_code(source: str, cfg: ModelConfig, dtype: torch.dtype) -> ModelAdapter:
    """Escape hatch (--trust-remote-code): the repository's own modelling code, used as a masked LM."""
    from transformers import AutoModel

    tok = _load_tokenizer(source, cfg)
    try:
        model = AutoModel.from_pretrained(source, trust_remote_code=True, **from_pretrained_kwargs(dtype))
    except Exception as e:  # remote code fails in many ways on newer transformers
        raise ModelLoadError(f"--model '{source}': its remote code failed to load on this transformers ({e})") from None
    return ModelAdapter(
        model=model, tokenizer=tok, mask_id=_mask_id(tok, source, model.config), eos_ids=eos_ids(tok),
        pad_id=tok.pad_token_id, supports_attention_mask=False, family="remote-code",
    )


def _read_json(source: str, filename: str) -> dict:
    """A JSON file of a local model directory or hub repository ({} when it has none)."""
    if Path(source).is_dir():
        path = Path(source) / filename
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(source, filename))
        except Exception:  # absent from the repository, or not cached while offline
            return {}
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _load_native(cls, source: str, cfg: ModelConfig, dtype: torch.dtype):
    """Load a published checkpoint into dllmrl's own class, strictly: every parameter name must match."""
    try:
        model, info = cls.from_pretrained(source, output_loading_info=True, **from_pretrained_kwargs(dtype))
    except OSError as e:
        raise ModelLoadError(f"--model '{source}': cannot load its weights ({e})") from None
    missing, unexpected = sorted(info.get("missing_keys", ())), sorted(info.get("unexpected_keys", ()))
    if missing or unexpected:
        raise ModelLoadError(
            f"--model '{source}': its weights do not match dllmrl's {cls.__name__} "
            f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}); "
            "pass --trust-remote-code to run the repository's own code instead"
        )
    return model


def _native_or_remote(load_native, source: str, cfg: ModelConfig, dtype: torch.dtype, family: str) -> ModelAdapter:
    """dllmrl's own implementation; --trust-remote-code only for a variant it does not implement."""
    try:
        return load_native(source, cfg, dtype)
    except ModelLoadError as e:
        if not cfg.trust_remote_code:
            raise
        log.warning("%s: %s; running the repository's own code (--trust-remote-code)", family, e)
    adapter = load_remote_code(source, cfg, dtype)
    adapter.family = f"{family}-remote-code"
    return adapter


def load_llada(source: str, cfg: ModelConfig, dtype: torch.dtype) -> ModelAdapter:
    """LLaDA (GSAI-ML/LLaDA-8B-Instruct, LLaDA-1.5) on dllmrl's own classes: mask id from config.json
    (126336 for the published checkpoints), logits not shifted, attention mask honoured."""
    adapter = _native_or_remote(_load_llada_native, source, cfg, dtype, "llada")
    if adapter.family != "llada":  # remote code: the published checkpoints' mask id, which config.json may omit
        adapter.mask_id = int(getattr(adapter.model.config, "mask_token_id", None) or LLADA_MASK_ID)
        adapter.lora_targets = LORA_TARGETS["llada"]
    return adapter


def _load_llada_native(source: str, cfg: ModelConfig, dtype: torch.dtype) -> ModelAdapter:
    from dllmrl.models.llada import LLaDAModelLM

    tok = _load_tokenizer(source, cfg)
    model = _load_native(LLaDAModelLM, source, cfg, dtype)
    # The model defines its mask token (config.json); the tokenizer of the published checkpoints names none.
    mask_id = model.config.mask_token_id
    if mask_id is None:
        mask_id = tok.mask_token_id if tok.mask_token_id is not None else LLADA_MASK_ID
    pad = tok.pad_token_id if tok.pad_token_id is not None else model.config.pad_token_id
    return ModelAdapter(
        model=model, tokenizer=tok, mask_id=int(mask_id), eos_ids=eos_ids(tok), pad_id=pad,
        supports_attention_mask=True, lora_targets=LORA_TARGETS["llada"], family="llada",
    )


def load_dream(source: str, cfg: ModelConfig, dtype: torch.dtype) -> ModelAdapter:
    """Dream (Dream-org/Dream-v0-Instruct-7B) on dllmrl's own classes: predicts position i+1 at i, so
    logits are shifted back; mask id from its tokenizer ("<|mask|>", 151666)."""
    adapter = _native_or_remote(_load_dream_native, source, cfg, dtype, "dream")
    adapter.shift_logits = True
    if adapter.family != "dream":
        adapter.lora_targets = LORA_TARGETS["Dream"]
    return adapter


def _load_dream_tokenizer(source: str, cfg: ModelConfig):
    """Dream ships its tokenizer as remote code (DreamTokenizer); it is Qwen2's byte-level BPE, which
    transformers has natively, so the same vocab.json / merges.txt / tokenizer_config.json load without it."""
    if cfg.trust_remote_code or _read_json(source, "tokenizer_config.json").get("tokenizer_class") != "DreamTokenizer":
        return _load_tokenizer(source, cfg)
    from transformers import Qwen2Tokenizer

    try:
        return Qwen2Tokenizer.from_pretrained(source)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"--model '{source}': cannot load its tokenizer as Qwen2's ({e})") from None


def _load_dream_native(source: str, cfg: ModelConfig, dtype: torch.dtype) -> ModelAdapter:
    from dllmrl.models.dream import DREAM_MASK_ID, DreamModel

    tok = _load_dream_tokenizer(source, cfg)
    model = _load_native(DreamModel, source, cfg, dtype)
    mask_id = tok.mask_token_id
    if mask_id is None:
        mask_id = model.config.mask_token_id if model.config.mask_token_id is not None else DREAM_MASK_ID
    pad = tok.pad_token_id if tok.pad_token_id is not None else model.config.pad_token_id
    return ModelAdapter(
        model=model, tokenizer=tok, mask_id=int(mask_id), eos_ids=eos_ids(tok), pad_id=pad, shift_logits=True,
        supports_attention_mask=True, lora_targets=LORA_TARGETS["Dream"], family="dream",
    )


for _t in ("modernbert", "bert", "roberta", "distilbert", "xlm-roberta", "deberta-v2", "electra"):
    MODELS.register(_t, load_masked_lm)
MODELS.register("gemma3_text", load_bidirectional_causal)
MODELS.register("remote-code", load_remote_code)
MODELS.register("llada", load_llada)
MODELS.register("Dream", load_dream)
