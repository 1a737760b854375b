"""dllmrl's own LLaDA and Dream classes against golden fixtures recorded with the published code.

    python3 -m pytest -q tests/test_native_models.py

tests/fixtures/{llada,dream}-tiny hold tiny random weights under the published parameter names
and the published code's float32 logits (scripts/make_fixtures.py says how they were made).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from dllmrl.config import ModelConfig, SamplerConfig
from dllmrl.errors import ModelLoadError
from dllmrl.models import load_model
from dllmrl.models.dream import DreamConfig, DreamModel
from dllmrl.models.llada import LLaDAConfig, LLaDAModelLM
from dllmrl.sampling.sampler import sample

FIXTURES = Path(__file__).parent / "fixtures"
FAMILIES = {"llada": ("llada-tiny", LLaDAModelLM), "dream": ("dream-tiny", DreamModel)}
TOL = 1e-4


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    """(name, fixture dir, model in eval mode, expected tensors)."""
    sub, cls = FAMILIES[request.param]
    model = cls.from_pretrained(FIXTURES / sub, dtype=torch.float32).eval()
    return request.param, FIXTURES / sub, model, load_file(str(FIXTURES / sub / "expected.safetensors"))


def left_pad(expected: dict, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    seqs = [expected[f"ids.{i}"][0] for i in range(3)]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s):], mask[i, width - len(s):] = s, 1
    return ids, mask, [len(s) for s in seqs]


# ----------------------------------------------------------------------------- golden logits


def test_fixture_loads_strictly(family):
    name, path, _, _ = family
    cls = FAMILIES[name][1]
    model, info = cls.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    # Every published parameter name is ours, and nothing else is: the state dicts are the same set.
    assert set(model.state_dict()) == set(load_file(str(path / "model.safetensors")))


def test_logits_match_published_code(family):
    _, _, model, e = family
    with torch.no_grad():
        for i in range(3):  # each sequence alone (lengths 12, 9, 5)
            assert rel_err(model(e[f"ids.{i}"]).logits, e[f"logits.{i}"]) < TOL
        assert rel_err(model(e["batch_ids"]).logits, e["batch_logits"]) < TOL  # a batch without padding


def test_left_padded_batch_gives_each_sequence_its_logits_alone(family):
    # The published LLaDA ignores attention masks, so the reference is each sequence alone.
    _, _, model, e = family
    ids, mask, lengths = left_pad(e)
    with torch.no_grad():
        out = model(ids, attention_mask=mask).logits  # positions derived from the mask
    for i, n in enumerate(lengths):
        assert rel_err(out[i, -n:], e[f"logits.{i}"][0]) < TOL


def test_dream_padded_batch_matches_published_4d_mask_path():
    _, path = None, FIXTURES / "dream-tiny"
    model = DreamModel.from_pretrained(path).eval()
    e = load_file(str(path / "expected.safetensors"))
    real = e["padded_mask"].bool()
    mask4d = real[:, None, None, :] & real[:, None, :, None]
    tok_idx = (e["padded_mask"].cumsum(-1) - 1).masked_fill(~real, 1)
    with torch.no_grad():
        ours = model(e["padded_ids"], attention_mask=e["padded_mask"]).logits
        as_published = model(e["padded_ids"], mask4d, tok_idx).logits  # the call Dream's generate() makes
    assert rel_err(ours[real], e["padded_logits"][real]) < TOL
    assert rel_err(as_published[real], e["padded_logits"][real]) < TOL


def test_padded_keys_are_excluded(family):
    _, _, model, e = family
    ids, mask, lengths = left_pad(e)
    other = ids.clone()
    other[mask == 0] = 7  # different tokens where the mask says padding
    with torch.no_grad():
        a, b = model(ids, attention_mask=mask).logits, model(other, attention_mask=mask).logits
    assert torch.isfinite(a).all()  # padded query rows stay finite
    assert torch.equal(a[mask.bool()], b[mask.bool()])


def test_fixture_detects_a_wrong_rotary_base(family):
    # Guard against a fixture too weak to see errors: a changed rope_theta must fail the tolerance.
    name, path, _, e = family
    cls = FAMILIES[name][1]
    wrong = cls.from_pretrained(path, rope_theta=10000.0).eval()
    with torch.no_grad():
        assert rel_err(wrong(e["ids.0"]).logits, e["logits.0"]) > 100 * TOL


# ----------------------------------------------------------------------------- training features


def test_bfloat16_forward_is_close_to_float32(family):
    name, path, model, e = family
    bf = FAMILIES[name][1].from_pretrained(path, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        out = bf(e["ids.0"]).logits
    assert out.dtype == torch.bfloat16
    assert rel_err(out.float(), e["logits.0"]) < 0.05


def test_gradient_checkpointing_gives_the_same_gradients(family):
    name, path, _, e = family
    grads = []
    for checkpointing in (False, True):
        model = FAMILIES[name][1].from_pretrained(path).train()
        calls = []
        if checkpointing:  # transformers 5.x renamed gradient_ to activation_checkpointing_enable
            if hasattr(model, "activation_checkpointing_enable"):
                model.activation_checkpointing_enable({"use_reentrant": False})
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False)]
            assert len(layers) == model.config.num_hidden_layers
            for layer in layers:  # count the recomputed layers
                layer._gradient_checkpointing_func = _counting(layer._gradient_checkpointing_func, calls)
        ids, mask, _ = left_pad(e)
        model(ids, attention_mask=mask).logits.logsumexp(-1).mean().backward()
        assert len(calls) == (model.config.num_hidden_layers if checkpointing else 0)
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-5, atol=1e-6)


def _counting(fn, calls):
    def wrapped(*args, **kwargs):
        calls.append(1)
        return fn(*args, **kwargs)

    return wrapped


def test_lora_targets_the_family_modules(family):
    from peft import LoraConfig, get_peft_model

    name, path, _, e = family
    adapter = load_model(ModelConfig(model=str(path), device="cpu", dtype="float32"))
    peft_model = get_peft_model(adapter.model, LoraConfig(r=4, lora_alpha=8, target_modules=list(adapter.lora_targets)))
    wrapped = {n.rsplit(".", 1)[-1] for n, m in peft_model.named_modules() if hasattr(m, "lora_A")}
    assert wrapped == set(adapter.lora_targets)
    assert not hasattr(peft_model.get_output_embeddings(), "lora_A")  # the output layer stays as it is
    peft_model(e["ids.0"]).logits.sum().backward()
    lora = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert lora and all(p.grad is not None for p in lora)


def test_save_and_reload_keeps_published_names_and_fields(family, tmp_path):
    name, path, model, e = family
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    published = json.loads((path / "config.json").read_text())
    # Fields the published code reads survive a save (so the published code can load our checkpoints too).
    keys = {"llada": ("d_model", "n_layers", "n_heads", "mlp_hidden_size", "rope_theta", "mask_token_id"),
            "dream": ("hidden_size", "num_hidden_layers", "num_key_value_heads", "intermediate_size", "rope_theta",
                      "mask_token_id")}[name]
    for key in keys:
        assert saved[key] == published[key], key
    assert set(load_file(str(tmp_path / "model.safetensors"))) == set(load_file(str(path / "model.safetensors")))
    again = FAMILIES[name][1].from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert rel_err(again(e["ids.1"]).logits, e["logits.1"]) < TOL


def test_auto_classes_resolve_without_remote_code(family):
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    name, path, _, _ = family
    conf = AutoConfig.from_pretrained(path)  # config.json carries the published auto_map; no remote code runs
    assert type(conf) is {"llada": LLaDAConfig, "dream": DreamConfig}[name]
    assert type(AutoModel.from_pretrained(path)) is FAMILIES[name][1]
    assert type(AutoModelForMaskedLM.from_pretrained(path)) is FAMILIES[name][1]


# ----------------------------------------------------------------------------- adapter and sampler


def test_adapter_of_each_family(family):
    name, path, _, _ = family
    adapter = load_model(ModelConfig(model=str(path), device="cpu", dtype="float32"))
    assert (adapter.family, adapter.mask_id, adapter.shift_logits) == (name, 2, name == "dream")
    assert adapter.supports_attention_mask and adapter._takes_position_ids()
    assert 4 in adapter.eos_ids and adapter.vocab_size == 105


def test_sampler_runs_and_a_padded_batch_samples_as_each_prompt_alone(family):
    name, path, _, _ = family
    adapter = load_model(ModelConfig(model=str(path), device="cpu", dtype="float32"))
    prompts = [adapter.render_prompt("2+2=?"), adapter.render_prompt("a much longer question")]
    cfg = SamplerConfig(gen_len=16, steps=8, block_len=8, temperature=0.0)
    ids, attn = adapter.encode(prompts)
    traj = sample(adapter, ids, attn, cfg)
    assert traj.tokens.shape == (2, ids.shape[1] + 16)
    assert not (traj.tokens[:, ids.shape[1]:] == adapter.mask_id).any()
    for i, p in enumerate(prompts):  # same completion and record as the prompt alone
        one_ids, one_attn = adapter.encode([p])
        alone = sample(adapter, one_ids, one_attn, cfg)
        assert torch.equal(traj.tokens[i, -16:], alone.tokens[0, -16:])
        assert torch.equal(traj.unmask_step[i, -16:], alone.unmask_step[0, -16:])
        torch.testing.assert_close(traj.step_logp[i], alone.step_logp[0], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- loading errors


def test_unimplemented_variants_are_refused_clearly():
    with pytest.raises(ModelLoadError, match="block_type='sequential'"):
        LLaDAModelLM(LLaDAConfig(d_model=32, n_heads=4, n_layers=1, mlp_hidden_size=64, vocab_size=50,
                                 embedding_size=64, block_type="sequential"))
    with pytest.raises(ModelLoadError, match="rope_scaling"):
        DreamConfig(hidden_size=32, num_attention_heads=4, rope_scaling={"rope_type": "yarn", "factor": 4.0})


def test_the_loaders_llada_mask_id_is_the_models():
    from dllmrl.models import families
    from dllmrl.models.llada import LLADA_MASK_ID

    assert families.LLADA_MASK_ID == LLADA_MASK_ID == 126336


def test_embedding_size_larger_than_vocab_sets_the_logit_width():
    model = LLaDAModelLM(LLaDAConfig(d_model=32, n_heads=4, n_layers=1, mlp_hidden_size=64, vocab_size=100,
                                     embedding_size=128))
    assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 128)


def test_renamed_weights_are_an_error_not_random_init(tmp_path):
    shutil.copytree(FIXTURES / "llada-tiny", tmp_path / "m")
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    weights["model.transformer.blocks.0.o_proj.weight"] = weights.pop("model.transformer.blocks.0.attn_out.weight")
    save_file(weights, str(tmp_path / "m" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="attn_out"):
        load_model(ModelConfig(model=str(tmp_path / "m"), device="cpu", dtype="float32"))


def test_dream_tokenizer_loads_without_its_remote_code(tmp_path):
    """Dream ships DreamTokenizer as remote code; it is Qwen2's byte-level BPE, loaded natively."""
    from dllmrl.models.families import _load_dream_tokenizer

    # GPT-2's byte-to-unicode alphabet: printable Latin-1 as itself, the other bytes from U+0100 on.
    byte_chars = [chr(c) for c in (*range(33, 127), *range(161, 173), *range(174, 256))]
    byte_chars += [chr(256 + i) for i in range(256 - len(byte_chars))]
    vocab = {c: i for i, c in enumerate(byte_chars)}
    vocab["he"] = len(vocab)
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "merges.txt").write_text("#version: 0.2\nh e\n")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "DreamTokenizer", "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "added_tokens_decoder": {str(len(vocab) + i): {"content": t, "special": True, "lstrip": False, "rstrip": False,
                                                       "normalized": False, "single_word": False}
                                 for i, t in enumerate(specials)},
        "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "mask_token": "<|mask|>",
    }))
    tok = _load_dream_tokenizer(str(tmp_path), ModelConfig(model=str(tmp_path)))
    assert tok.mask_token_id == len(vocab) + 3 and tok.eos_token_id == len(vocab)
    ids = tok("the<|mask|>", add_special_tokens=False)["input_ids"]
    assert ids[-1] == tok.mask_token_id and tok.decode(ids) == "the<|mask|>"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="4-bit loading needs CUDA and bitsandbytes")
def test_four_bit_loading_on_gpu():
    pytest.importorskip("bitsandbytes")
    from transformers import BitsAndBytesConfig

    e = load_file(str(FIXTURES / "llada-tiny" / "expected.safetensors"))
    bnb = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16)
    model = LLaDAModelLM.from_pretrained(FIXTURES / "llada-tiny", quantization_config=bnb, device_map={"": 0})
    with torch.no_grad():
        out = model(e["ids.0"].cuda()).logits.float().cpu()
    assert rel_err(out, e["logits.0"]) < 0.3  # nf4 of random weights: coarse, but the same function


def test_an_adapter_saved_like_the_papers_loads_from_a_subfolder(family, tmp_path):
    """EGSPO's script targets Llama's seven names; on LLaDA only q/k/v/up_proj exist. Such an adapter,
    saved in a per-task subfolder as the paper's hub repos do, loads with --adapter/--adapter-subfolder."""
    from peft import LoraConfig, get_peft_model

    name, path, _, e = family
    seven = ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj", "gate_proj"]
    base = FAMILIES[name][1].from_pretrained(path)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=seven, init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "repo" / "gsm8k" / "egspo-sa")
    with torch.no_grad():
        want = peft_model(e["ids.0"]).logits
    tuned = load_model(ModelConfig(model=str(path), adapter=str(tmp_path / "repo"), adapter_subfolder="gsm8k/egspo-sa",
                                   device="cpu", dtype="float32"))
    with torch.no_grad():
        got = tuned.model(e["ids.0"]).logits
    assert rel_err(got, want) < TOL and rel_err(got, e["logits.0"]) > 100 * TOL  # the adapter is on and matters
