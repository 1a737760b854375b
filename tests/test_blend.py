"""Sampling-time adapter blending (--adapter NAME=DIR, --blend, --blend-base-scale, --blend-mode) and
``dllmrl merge``, on the tiny ModernBERT with two small random LoRA adapters made here."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from dllmrl.adapter_spec import named_adapters
from dllmrl.cli import app
from dllmrl.config import BlendConfig, ModelConfig, SamplerConfig
from dllmrl.errors import ConfigError, ModelLoadError
from dllmrl.evaluation.loop import read_records
from dllmrl.models import load_model
from dllmrl.sampling.blend import apply_blend
from dllmrl.sampling.sampler import sample

runner = CliRunner()
SCFG = SamplerConfig(gen_len=16, steps=8, block_len=16)


def make_adapter(base_dir: str, out, seed: int) -> str:
    """A random rank-4 all-linear LoRA (B not zero, so it changes the logits), saved as a normal adapter dir."""
    from peft import LoraConfig, get_peft_model

    base = load_model(ModelConfig(model=base_dir, device="cpu", dtype="float32")).model
    torch.manual_seed(seed)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    peft.save_pretrained(str(out))
    return str(out)


@pytest.fixture(scope="module")
def lora(tiny_model_dir, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("lora")
    return {"A": make_adapter(tiny_model_dir, root / "A", 1), "B": make_adapter(tiny_model_dir, root / "B", 2)}


def load(base: str, adapter=None, subfolder=None):
    return load_model(ModelConfig(model=base, adapter=adapter, adapter_subfolder=subfolder, device="cpu",
                                  dtype="float32"))


def blended(base: str, adapter, blend: BlendConfig):
    return apply_blend(load(base, adapter), blend, named_adapters(adapter))


def tokens(model, seed: int = 0, cfg: SamplerConfig = SCFG) -> list[int]:
    ids, attn = model.encode([model.render_prompt("abc"), model.render_prompt("hello there")])
    gen = torch.Generator().manual_seed(seed)
    return sample(model, ids, attn, cfg, generator=gen).completion_ids.tolist()


@pytest.fixture(scope="module")
def plain(tiny_model_dir, lora) -> dict[str, list[int]]:
    """The tokens of the base model and of each adapter loaded the ordinary way (--adapter DIR)."""
    out = {"base": tokens(load(tiny_model_dir))}
    out.update({k: tokens(load(tiny_model_dir, v)) for k, v in lora.items()})
    assert len({json.dumps(v) for v in out.values()}) == 3  # the adapters change the tokens: nothing below is vacuous
    return out


@pytest.mark.parametrize("batched", [True, False])
def test_weight_one_on_one_adapter_is_that_adapter(tiny_model_dir, lora, plain, batched):
    both = (f"a={lora['A']}", f"b={lora['B']}")
    assert tokens(blended(tiny_model_dir, both, BlendConfig(blend="b=1", blend_batched=batched))) == plain["B"]
    assert tokens(blended(tiny_model_dir, both, BlendConfig(blend="a=1,b=0", blend_batched=batched))) == plain["A"]


def test_base_scale_zero_is_the_base_and_one_is_the_adapter(tiny_model_dir, lora, plain):
    one = f"a={lora['A']}"
    assert tokens(blended(tiny_model_dir, one, BlendConfig(blend_base_scale=0.0))) == plain["base"]
    assert tokens(blended(tiny_model_dir, one, BlendConfig(blend_base_scale=1.0))) == plain["A"]
    # a plain (unnamed) --adapter works too; extrapolating moves away from both
    far = tokens(blended(tiny_model_dir, lora["A"], BlendConfig(blend_base_scale=3.0)))
    assert far not in (plain["A"], plain["base"])


def test_halves_of_two_identical_adapters_equal_one(tiny_model_dir, lora, plain):
    same = (f"a={lora['A']}", f"a2={lora['A']}")
    for batched in (True, False):
        assert tokens(blended(tiny_model_dir, same, BlendConfig(blend="a=0.5,a2=0.5", blend_batched=batched))) == plain["A"]


def test_blend_is_the_weighted_sum_of_logits_batched_or_not(tiny_model_dir, lora):
    both = (f"a={lora['A']}", f"b={lora['B']}")
    ids, attn = load(tiny_model_dir).encode(["<|user|>\nxyz<|eot|><|assistant|>\n" + "<mask>" * 4])
    want = 0.7 * load(tiny_model_dir, lora["A"]).logits(ids) - 0.2 * load(tiny_model_dir, lora["B"]).logits(ids) \
        + 0.5 * load(tiny_model_dir).logits(ids)
    for batched in (True, False):
        m = blended(tiny_model_dir, both, BlendConfig(blend="a=0.7,b=-0.2,base=0.5", blend_batched=batched))
        got = m.head(m.hidden(ids)[0, -6:])  # the head at a few positions, as the sampler asks
        torch.testing.assert_close(got, want[0, -6:], rtol=1e-5, atol=1e-5)


def test_kl_to_base_is_the_hand_computed_kl_and_changes_no_token(tiny_model_dir, lora, plain):
    one = f"a={lora['A']}"
    ids, attn = load(tiny_model_dir).encode(["<|user|>\nxyz<|eot|><|assistant|>\n" + "<mask>" * 4])
    base_logits, a_logits = load(tiny_model_dir).logits(ids)[0, -6:], load(tiny_model_dir, lora["A"]).logits(ids)[0, -6:]
    m = blended(tiny_model_dir, one, BlendConfig(blend_base_scale=0.5, blend_kl=True))
    m.head(m.hidden(ids)[0, -6:])
    keep = torch.arange(base_logits.shape[-1]) != m.mask_id  # the mask token is never decoded
    p = torch.log_softmax((0.5 * base_logits + 0.5 * a_logits)[:, keep], -1)
    q = torch.log_softmax(base_logits[:, keep], -1)
    want = float((p.exp() * (p - q)).sum(-1).mean().detach())
    assert m.kl_rows == 6 and want > 1e-3 and m.kl_to_base == pytest.approx(want, rel=1e-4)
    # lambda = 1 is the adapter alone: the base joins only for the KL and changes no token
    m1 = blended(tiny_model_dir, one, BlendConfig(blend_base_scale=1.0, blend_kl=True))
    assert tokens(m1) == plain["A"] and m1.kl_to_base > 0
    m0 = blended(tiny_model_dir, one, BlendConfig(blend_base_scale=0.0, blend_kl=True))
    assert tokens(m0) == plain["base"] and m0.kl_rows > 0 and m0.kl_to_base == pytest.approx(0.0, abs=1e-6)


def test_eval_blend_kl_writes_its_mean(tiny_model_dir, lora, tmp_path):
    out = tmp_path / "kl"
    args = ["eval", "sudoku", "--model", tiny_model_dir, "--limit", "2", "--gen-len", "16", "--block-len", "16",
            "--prompt-style", "compact", "--out", str(out), "--device", "cpu", "--adapter", lora["A"]]
    r = runner.invoke(app, [*args, "--blend-base-scale", "1.5", "--blend-kl"])
    assert r.exit_code == 0, r.output
    got = json.loads((out / "kl_to_base.json").read_text())
    assert got["kl_to_base"] > 0 and got["positions"] >= 2 * 16 and got["blend"]["base_scale"] == 1.5
    r = runner.invoke(app, [*args, "--blend-kl"])
    assert r.exit_code == 1 and "--blend-kl measures a blend" in r.output and "Traceback" not in r.output


def test_random_step_is_reproducible_by_seed(tiny_model_dir, lora, plain):
    m = blended(tiny_model_dir, (f"a={lora['A']}", f"b={lora['B']}"), BlendConfig(blend="a=0.5,b=0.5",
                                                                                 blend_mode="random-step"))
    runs = {s: tokens(m, seed=s) for s in (0, 1, 2)}
    assert tokens(m, seed=0) == runs[0]
    assert len({json.dumps(v) for v in runs.values()}) > 1  # another seed draws other adapters at some step
    only_a = blended(tiny_model_dir, (f"a={lora['A']}", f"b={lora['B']}"),
                     BlendConfig(blend="a=1,b=0", blend_mode="random-step"))
    assert tokens(only_a, seed=3) == plain["A"]  # probability 1 on one adapter is that adapter


def test_adapters_for_another_base_or_vocabulary_are_one_error(tiny_model_dir, lora, tmp_path):
    from dllmrl.models.tiny import TinyConfig, build_tiny

    other = str(build_tiny(tmp_path / "other", TinyConfig(hidden=48, layers=2, heads=2, intermediate=64)))
    c = make_adapter(other, tmp_path / "C", 3)
    with pytest.raises(ModelLoadError, match="made for base model"):
        load(tiny_model_dir, (f"a={lora['A']}", f"c={c}"))
    cfg = json.loads((tmp_path / "C" / "adapter_config.json").read_text())  # claims our base, has other shapes
    (tmp_path / "C" / "adapter_config.json").write_text(json.dumps({**cfg, "base_model_name_or_path": tiny_model_dir}))
    with pytest.raises(ModelLoadError, match="does not fit --model"):
        load(tiny_model_dir, (f"a={lora['A']}", f"c={c}"))


def test_a_named_adapter_in_a_subfolder_loads(tiny_model_dir, lora, plain, tmp_path):
    import shutil

    shutil.copytree(lora["A"], tmp_path / "repo" / "task" / "egspo-sa")
    repo = str(tmp_path / "repo")
    for adapter, sub in [((f"a={repo}:task/egspo-sa", f"b={lora['B']}"), None),
                         ((f"a={repo}", f"b={lora['B']}"), ("a=task/egspo-sa",))]:
        m = apply_blend(load(tiny_model_dir, adapter, sub), BlendConfig(blend="a=1"), named_adapters(adapter, sub))
        assert tokens(m) == plain["A"]


def test_named_adapter_subfolders(lora):
    got = named_adapters(("x=hub/repo:gsm8k/egspo-sa", "y=DIR"), ("y=sub/dir",))
    assert [(a.name, a.source, a.subfolder) for a in got] == [("x", "hub/repo", "gsm8k/egspo-sa"), ("y", "DIR", "sub/dir")]
    assert [(a.name, a.subfolder) for a in named_adapters("DIR", "math/egspo-sa")] == [("default", "math/egspo-sa")]
    with pytest.raises(ConfigError, match="each needs a name"):
        named_adapters(("DIR1", "DIR2"))
    with pytest.raises(ConfigError, match="reserved"):
        named_adapters(("base=DIR1", "b=DIR2"))
    with pytest.raises(ConfigError, match="NAME=SUB"):
        named_adapters(("a=DIR1", "b=DIR2"), ("c=x",))


@pytest.mark.parametrize("extra,message", [
    (["--blend", "a=zz"], "the weight of 'a' is 'zz'"),
    (["--blend", "a0.5"], "is not NAME=WEIGHT"),
    (["--blend", "a=1,a=2"], "given twice"),
    (["--blend", "c=1"], "no --adapter NAME=DIR gives"),
    (["--blend", "a=0.5,b=0.6", "--blend-mode", "random-step"], "sum to 1"),
    (["--blend", "a=1", "--blend-mode", "mix"], "--blend-mode must be one of"),
    (["--blend", "a=1", "--blend-base-scale", "0.5"], "pass one of them"),
    (["--blend-base-scale", "0.5"], "blends the base with ONE adapter"),
    ([], "but no --blend"),
    (["--blend", "a=1", "--cache", "prefix"], "does not combine with --blend"),
])
def test_bad_blend_options_give_one_line(tiny_model_dir, lora, extra, message):
    args = ["sample", "abc", "--model", tiny_model_dir, "--device", "cpu", "--adapter", f"a={lora['A']}",
            "--adapter", f"b={lora['B']}", "--json", *extra]
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, r.output
    assert r.output.strip().startswith("error:") and len(r.output.strip().splitlines()) == 1


def test_sample_command_blends_and_reports_it(tiny_model_dir, lora):
    r = runner.invoke(app, ["sample", "abc", "--model", tiny_model_dir, "--device", "cpu", "--gen-len", "16",
                            "--steps", "8", "--block-len", "16", "--json", "--adapter", f"a={lora['A']}",
                            "--adapter", f"b={lora['B']}", "--blend", "a=0.5,b=0.5"])
    assert r.exit_code == 0, r.output
    blend = json.loads(r.stdout)["config"]["blend"]
    assert blend["weights"] == {"a": 0.5, "b": 0.5} and blend["adapters"] == {"a": lora["A"], "b": lora["B"]}
    assert "kl_to_base" not in json.loads(r.stdout)
    r = runner.invoke(app, ["sample", "abc", "--model", tiny_model_dir, "--device", "cpu", "--gen-len", "16",
                            "--steps", "8", "--block-len", "16", "--json", "--adapter", lora["A"],
                            "--blend-base-scale", "1", "--blend-kl"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["kl_to_base"] > 0


def _lora_deltas(model) -> dict[str, torch.Tensor]:
    """Each LoRA layer's delta weight B @ A * scaling, for its active adapter."""
    from peft.tuners.lora import LoraLayer

    return {n: m.get_delta_weight(m.active_adapters[0]).detach().clone()
            for n, m in model.named_modules() if isinstance(m, LoraLayer)}


@pytest.mark.parametrize("how,factor", [("linear", 2.0), ("cat", 1.0)])
def test_merge_of_an_adapter_with_itself(tiny_model_dir, lora, tmp_path, how, factor):
    """peft's 'linear' combines A and B separately, each with sqrt(w * scaling), at scaling 1: for (A, A) at
    (0.5, 0.5) the product is (2 sqrt(0.5))^2 = 2 times the delta. 'cat' stacks the ranks: exactly 0.5 + 0.5."""
    out = tmp_path / how
    r = runner.invoke(app, ["merge", "--model", tiny_model_dir, "--adapter", lora["A"], "--adapter", lora["A"],
                            "--weights", "0.5,0.5", "--how", how, "-o", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    merged, orig = _lora_deltas(load(tiny_model_dir, str(out)).model), _lora_deltas(load(tiny_model_dir, lora["A"]).model)
    assert merged.keys() == orig.keys() and merged
    for k in orig:
        torch.testing.assert_close(merged[k], factor * orig[k], rtol=1e-4, atol=1e-5)
    tokens(load(tiny_model_dir, str(out)))  # a normal adapter directory: it samples


def test_merge_ties_and_bad_options(tiny_model_dir, lora, tmp_path):
    base = ["merge", "--model", tiny_model_dir, "--adapter", lora["A"], "--adapter", lora["B"], "--device", "cpu"]
    no_model = [a for a in base if a not in ("--model", tiny_model_dir)]  # the adapters' own base model
    r = runner.invoke(app, [*no_model, "--weights", "0.5,0.5", "--how", "ties", "--density", "0.5", "-o",
                            str(tmp_path / "t")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "t" / "dllmrl_merge.json").read_text())["model"] == tiny_model_dir
    load(tiny_model_dir, str(tmp_path / "t"))
    for extra, message in [(["--weights", "0.5"], "2 --adapter but 1 --weights"),
                           (["--weights", "0.5,x"], "--weights"),
                           (["--weights", "0.5,0.5", "--how", "avg"], "--how must be one of"),
                           (["--weights", "0.5,0.5", "--how", "ties"], "--density")]:
        r = runner.invoke(app, [*base, *extra, "-o", str(tmp_path / "bad")])
        assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output, r.output




def test_eval_records_carry_the_blend_and_a_new_blend_regenerates(tiny_model_dir, lora, tmp_path, count_sampling):
    out = tmp_path / "ev"
    args = ["eval", "sudoku", "--model", tiny_model_dir, "--limit", "2", "--gen-len", "16", "--block-len", "16",
            "--prompt-style", "compact", "--out", str(out), "--device", "cpu",
            "--adapter", f"a={lora['A']}", "--adapter", f"b={lora['B']}", "--blend", "a=0.5,b=0.5"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    recs = read_records(out / "records.jsonl")
    assert {json.dumps(r["settings"]["blend"], sort_keys=True) for r in recs} == {json.dumps(
        {"mode": "sum", "weights": {"a": 0.5, "b": 0.5}, "base_scale": None,
         "adapters": {"a": lora["A"], "b": lora["B"]}}, sort_keys=True)}
    assert runner.invoke(app, args).exit_code == 0 and sum(count_sampling) == 2  # same blend: resumed
    r = runner.invoke(app, [("a=0.25,b=0.75" if a == "a=0.5,b=0.5" else a) for a in args])
    assert r.exit_code == 0, r.output
    assert sum(count_sampling) == 4 and len(read_records(out / "records.jsonl")) == 4  # regenerated


@pytest.mark.parametrize("shape", ["llada-8b", "dream-7b"])
def test_native_llada_and_dream_blend_is_the_weighted_sum(shape):
    """The native families (their own trunk and head, Dream's shifted logits) blend exactly too."""
    from dataclasses import fields

    from peft import LoraConfig, get_peft_model

    from dllmrl.adapter_spec import NamedAdapter
    from dllmrl.models.base import ModelAdapter
    from dllmrl.models.shapes import random_shape_adapter

    base = random_shape_adapter(shape, layers=1, hidden=32, heads=2)
    torch.manual_seed(0)
    lcfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    named = (NamedAdapter("a", "-"), NamedAdapter("b", "-"))
    peft = get_peft_model(base.model, lcfg, adapter_name=named[0].peft_name)
    peft.add_adapter(named[1].peft_name, lcfg)
    peft.eval()
    m = ModelAdapter(**{f.name: getattr(base, f.name) for f in fields(ModelAdapter) if f.init})
    m.model = peft
    ids = torch.randint(10, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    own = {}
    for a in named:
        peft.set_adapter(a.peft_name)
        own[a.name] = m.logits(ids)
    with peft.disable_adapter():
        own["base"] = m.logits(ids)
    assert not torch.allclose(own["a"], own["b"]) and not torch.allclose(own["a"], own["base"])
    for batched in (True, False):
        blend = apply_blend(m, BlendConfig(blend="a=0.7,b=-0.2,base=0.5", blend_batched=batched), named)
        want = 0.7 * own["a"] - 0.2 * own["b"] + 0.5 * own["base"]
        torch.testing.assert_close(blend.head(blend.hidden(ids)[:, -5:]), want[:, -5:], rtol=1e-4, atol=1e-4)
