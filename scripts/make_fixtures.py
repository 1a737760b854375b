"""Record the golden fixtures for the native LLaDA and Dream classes (tests/fixtures/{llada,dream}-tiny).

Two steps, in two environments:

    # 1. With the published modelling code, in a scratch environment that runs it
    #    (transformers 4.x; the code is read from the given directories, never committed):
    python3 -m venv /tmp/scratch-venv
    /tmp/scratch-venv/bin/pip install torch==2.13.0 "transformers==4.57.6" "huggingface-hub<1.0" safetensors
    /tmp/scratch-venv/bin/python scripts/make_fixtures.py reference \\
        --llada-code DIR_WITH_modeling_llada.py --dream-code DIR_WITH_modeling_dream.py
    # 2. In the project's environment: the character tokenizer, so each fixture is a model directory.
    python3 scripts/make_fixtures.py tokenizer

Step 1 builds tiny random configurations with the real structure (2 layers, hidden 32, the
published config.json fields otherwise; Dream with grouped-query attention like Dream-7B),
fills every parameter from a fixed seed, and writes ``model.safetensors`` under the published
parameter names, ``config.json`` and ``expected.safetensors``: fixed token ids and the published
code's float32 logits for each sequence alone, for an unpadded batch, and (Dream, whose code
takes a 4D mask) for a left-padded batch. The vocabulary is the 105 ids of
``dllmrl.models.tiny.build_char_tokenizer()`` (mask 2, pad 0, BOS 3, EOS 4).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures"
VOCAB, PAD, MASK, BOS, EOS = 105, 0, 2, 3, 4
LENGTHS = (12, 9, 5)  # one sequence per length; the padded batch left-pads them to 12
BATCH_SHAPE = (3, 8)  # an unpadded batch

LLADA_CONFIG = {  # LLaDA-8B-Instruct's config.json with tiny sizes
    "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
    "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig", "AutoModel": "modeling_llada.LLaDAModelLM",
                 "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
    "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": 32,
    "embedding_dropout": 0.0, "embedding_size": VOCAB, "eos_token_id": EOS, "flash_attention": False,
    "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "cpu",
    "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
    "layer_norm_with_affine": True, "mask_token_id": MASK, "max_sequence_length": 64, "mlp_hidden_size": 96,
    "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None, "n_heads": 4, "n_kv_heads": 4,
    "n_layers": 2, "pad_token_id": PAD, "precision": "amp_bf16", "residual_dropout": 0.0, "rms_norm_eps": 1e-05,
    "rope": True, "rope_full_precision": True, "rope_theta": 500000.0, "scale_logits": False, "use_cache": False,
    "vocab_size": VOCAB, "weight_tying": False,
}

DREAM_CONFIG = {  # Dream-v0-Instruct-7B's config.json with tiny sizes (GQA 4:2 like 28:4)
    "architectures": ["DreamModel"], "attention_dropout": 0.0,
    "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
    "bos_token_id": BOS, "eos_token_id": EOS, "hidden_act": "silu", "hidden_size": 32, "initializer_range": 0.02,
    "intermediate_size": 96, "mask_token_id": MASK, "max_position_embeddings": 64, "max_window_layers": 2,
    "model_type": "Dream", "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 2,
    "pad_token_id": PAD, "rms_norm_eps": 1e-06, "rope_scaling": None, "rope_theta": 1000000.0,
    "sliding_window": None, "tie_word_embeddings": False, "torch_dtype": "float32", "use_cache": False,
    "use_sliding_window": False, "vocab_size": VOCAB,
}


def import_published(code_dir: str, package: str, module: str):
    """Import ``module`` from a copy of ``code_dir`` made into a package (the files use relative imports)."""
    tmp = Path(tempfile.mkdtemp()) / package
    tmp.mkdir()
    for f in Path(code_dir).glob("*.py"):
        shutil.copy(f, tmp / f.name)
    (tmp / "__init__.py").touch()
    sys.path.insert(0, str(tmp.parent))
    return importlib.import_module(f"{package}.{module}")


def fill(model, seed: int) -> None:
    """Deterministic weights far from the trivial init: norms around 1, linears scaled by fan-in."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:  # norm weights
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 2 and ("wte" in name or "embed_tokens" in name):
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def inputs(seed: int):
    """Fixed ids: BOS, random characters, a few mask tokens; one sequence per length, plus a batch."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def row(n):
        r = torch.randint(9, VOCAB, (n,), generator=g)
        r[0] = BOS
        r[torch.randperm(n, generator=g)[: n // 3].clamp(min=1)] = MASK
        return r

    return [row(n).unsqueeze(0) for n in LENGTHS], torch.stack([row(BATCH_SHAPE[1]) for _ in range(BATCH_SHAPE[0])])


def left_pad(seqs):
    import torch

    width = max(s.shape[1] for s in seqs)
    ids = torch.full((len(seqs), width), PAD, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - s.shape[1]:] = s[0]
        mask[i, width - s.shape[1]:] = 1
    return ids, mask


def write(out: Path, model, config: dict, tensors: dict) -> None:
    import torch
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out / "expected.safetensors"),
              metadata={"torch": torch.__version__, "source": "published modelling code, float32, CPU"})
    print(f"{out}: {len(state)} tensors, {(out / 'model.safetensors').stat().st_size // 1024} KiB")


def reference(args) -> None:
    import torch

    torch.manual_seed(0)
    seqs, batch = inputs(seed=1)

    # LLaDA: the published forward ignores attention masks, so only unpadded inputs are recorded;
    # our padding equivalence is tested against these per-sequence logits.
    conf_mod = import_published(args.llada_code, "published_llada", "configuration_llada")
    llada_mod = importlib.import_module("published_llada.modeling_llada")
    model = llada_mod.LLaDAModelLM(conf_mod.LLaDAConfig(**LLADA_CONFIG)).eval()
    fill(model, seed=2)
    t = {"batch_ids": batch}
    with torch.no_grad():
        for i, s in enumerate(seqs):
            t[f"ids.{i}"], t[f"logits.{i}"] = s, model(s).logits
        t["batch_logits"] = model(batch).logits
    write(OUT / "llada-tiny", model, LLADA_CONFIG, t)

    # Dream: also a left-padded batch through the published 4D-mask path (as its generate() builds it).
    conf_mod = import_published(args.dream_code, "published_dream", "configuration_dream")
    dream_mod = importlib.import_module("published_dream.modeling_dream")
    conf = conf_mod.DreamConfig(**DREAM_CONFIG)
    conf._attn_implementation = "sdpa"
    model = dream_mod.DreamModel(conf).eval()
    fill(model, seed=3)
    t = {"batch_ids": batch}
    ids, mask = left_pad(seqs)
    tok_idx = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    mask4d = torch.logical_and(mask.bool()[:, None, None, :], mask.bool()[:, None, :, None])  # (B, 1, L, L)
    with torch.no_grad():
        for i, s in enumerate(seqs):
            t[f"ids.{i}"], t[f"logits.{i}"] = s, model(s).logits
        t["batch_logits"] = model(batch).logits
        t["padded_ids"], t["padded_mask"] = ids, mask
        t["padded_logits"] = model(ids, mask4d, tok_idx).logits
    write(OUT / "dream-tiny", model, DREAM_CONFIG, t)


def tokenizer(args) -> None:
    sys.path.insert(0, str(ROOT))
    from dllmrl.models.tiny import build_char_tokenizer

    tok = build_char_tokenizer()
    ids = (len(tok), tok.pad_token_id, tok.mask_token_id, tok.bos_token_id, tok.eos_token_id)
    assert ids == (VOCAB, PAD, MASK, BOS, EOS), f"the char tokenizer changed: {ids}; re-record the fixtures"
    for name in ("llada-tiny", "dream-tiny"):
        tok.save_pretrained(OUT / name)
        print(f"{OUT / name}: tokenizer written")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="step", required=True)
    ref = sub.add_parser("reference", help="weights, config and expected logits, with the published code")
    ref.add_argument("--llada-code", required=True,
                     help="directory holding modeling_llada.py and configuration_llada.py")
    ref.add_argument("--dream-code", required=True,
                     help="directory holding modeling_dream.py, configuration_dream.py, generation_utils.py")
    sub.add_parser("tokenizer", help="the character tokenizer next to each fixture (project environment)")
    args = ap.parse_args()
    {"reference": reference, "tokenizer": tokenizer}[args.step](args)


if __name__ == "__main__":
    main()
