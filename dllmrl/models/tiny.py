"""Build a tiny ModernBERT masked LM and a character tokenizer, saved as a normal HF directory.

    python -m dllmrl.models.tiny OUT_DIR [--hidden 64 --layers 2]

Tests and the shipped tiny checkpoints start from this. The tokenizer has one token per
printable ASCII character plus newline, and special tokens for padding, masking, BOS/EOS
and a minimal chat template (BOS is put in the template: it is not added automatically).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

SPECIAL = ["<pad>", "<unk>", "<mask>", "<bos>", "<eos>", "<|system|>", "<|user|>", "<|assistant|>", "<|eot|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|eot|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class TinyConfig:
    hidden: int = 64
    """Hidden size."""
    layers: int = 2
    """Transformer layers."""
    heads: int = 2
    """Attention heads."""
    intermediate: int = 128
    """MLP width."""
    max_len: int = 1024
    """Longest sequence (prompt + generation)."""
    seed: int = 0
    """Seed for the random initial weights."""


def char_tokenizer(special: list[str], chars: list[str], chat_template: str, *, pad: str, mask: str, bos: str,
                   eos: str, unk: str = "<unk>"):
    """A fast tokenizer with one token per character (``chars``) after the ``special`` tokens, and a chat template."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(special + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(special)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=pad, unk_token=unk, mask_token=mask, bos_token=bos, eos_token=eos,
        extra_special_tokens=[t for t in special if t not in (pad, unk, mask, bos, eos)],
    )
    fast.chat_template = chat_template
    return fast


def build_char_tokenizer():
    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    return char_tokenizer(SPECIAL, chars, CHAT_TEMPLATE, pad="<pad>", mask="<mask>", bos="<bos>", eos="<eos>")


def build_tiny_model(tokenizer, cfg: TinyConfig = TinyConfig()):
    import torch
    from transformers import ModernBertConfig, ModernBertForMaskedLM

    conf = ModernBertConfig(
        vocab_size=len(tokenizer), hidden_size=cfg.hidden, intermediate_size=cfg.intermediate,
        num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads, max_position_embeddings=cfg.max_len,
        layer_types=["full_attention"] * cfg.layers,  # every layer sees the whole sequence
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, cls_token_id=tokenizer.bos_token_id, sep_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng():
        torch.manual_seed(cfg.seed)
        model = ModernBertForMaskedLM(conf)
    return model


def build_tiny(out_dir: str | Path, cfg: TinyConfig = TinyConfig()) -> Path:
    """Write a tiny model + tokenizer to ``out_dir`` and return it."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_char_tokenizer()
    build_tiny_model(tok, cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    for name, default in TinyConfig().__dict__.items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=int, default=default)
    args = vars(ap.parse_args())
    out = args.pop("out_dir")
    build_tiny(out, TinyConfig(**args))


if __name__ == "__main__":
    main()
