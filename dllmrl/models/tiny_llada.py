"""Build a tiny native LLaDA and a character tokenizer for the compact Sudoku and Countdown prompts.

    python -m dllmrl.models.tiny_llada OUT_DIR [--hidden 128 --layers 4 --heads 4 --intermediate 384 --max-len 64]

The model is dllmrl's own ``LLaDAModelLM`` (``model_type`` "llada", LLaDA-8B's architecture at a
tiny size), so ``--model OUT_DIR`` loads through the same code path as LLaDA-8B. The tokenizer
has one token per character that the two packs' ``compact`` prompts and gold answers use
(digits, space, ``( ) * + - /``, ``>``, ``=`` and newline) plus LLaDA's special tokens under
LLaDA's names: ``<|mdm_mask|>`` (mask, also written to config.json as ``mask_token_id``),
``<|startoftext|>`` (BOS), ``<|endoftext|>`` (EOS: SFT pads completions with it) and
``<|eot_id|>`` (end of turn). The sampler stops on both, as it does for LLaDA-8B. The chat
template keeps LLaDA's shape (BOS, a role header, the content, ``<|eot_id|>``) with one token per
role header, so a compact prompt stays 22 tokens instead of LLaDA's 39 with spelt-out roles.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from pathlib import Path

SPECIAL = ["<|pad|>", "<unk>", "<|mdm_mask|>", "<|startoftext|>", "<|endoftext|>", "<|eot_id|>",
           "<|system|>", "<|user|>", "<|assistant|>"]
CHARS = list("0123456789 ()*+-/=>\n")
"""Every character of both packs' compact prompts ('3102200002100320', '44 19 35 -> 98') and answers."""
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class TinyLladaConfig:
    hidden: int = 128
    """d_model."""
    layers: int = 4
    """Transformer blocks."""
    heads: int = 4
    """Attention heads (as many key-value heads)."""
    intermediate: int = 384
    """Width of the SiLU-gated MLP (mlp_hidden_size)."""
    max_len: int = 64
    """max_sequence_length: longest prompt + generation (rotary, so only a bound on use)."""
    seed: int = 0
    """Seed of the random initial weights."""


def build_llada_tokenizer():
    from dllmrl.models.tiny import char_tokenizer

    return char_tokenizer(SPECIAL, CHARS, CHAT_TEMPLATE, pad="<|pad|>", mask="<|mdm_mask|>", bos="<|startoftext|>",
                          eos="<|endoftext|>")


def build_llada_model(tokenizer, cfg: TinyLladaConfig = TinyLladaConfig()):
    import torch
    from torch import nn

    from dllmrl.models.llada import LLaDAConfig, LLaDAModelLM

    conf = LLaDAConfig(
        d_model=cfg.hidden, n_heads=cfg.heads, n_kv_heads=cfg.heads, n_layers=cfg.layers,
        mlp_hidden_size=cfg.intermediate, vocab_size=len(tokenizer), embedding_size=len(tokenizer),
        max_sequence_length=cfg.max_len, mask_token_id=tokenizer.mask_token_id,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, architectures=["LLaDAModelLM"],
    )
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = LLaDAModelLM(conf)
        # LLaDA's own initialisation is a normal(0, 0.02) family; the class leaves torch's defaults,
        # whose N(0, 1) embeddings make a tiny model's first steps unstable.
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
    return model


def build_tiny_llada(out_dir: str | Path, cfg: TinyLladaConfig = TinyLladaConfig()) -> Path:
    """Write a tiny LLaDA + tokenizer to ``out_dir`` and return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_llada_tokenizer()
    build_llada_model(tok, cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    for f in fields(TinyLladaConfig):
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=int, default=f.default)
    args = vars(ap.parse_args())
    out = args.pop("out_dir")
    build_tiny_llada(out, TinyLladaConfig(**args))


if __name__ == "__main__":
    main()
