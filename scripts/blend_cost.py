"""Cost of a blended denoising step against a plain one (sampling-time adapter blending).

    OMP_NUM_THREADS=1 python scripts/blend_cost.py                                   # shipped tiny-llada, CPU
    python scripts/blend_cost.py --shape llada-8b --layers 4 --device cuda --batch 8 --gen-len 256 --prompt-len 256

Times ``sample`` (same prompts, temperature 0) for: the base model; one LoRA adapter loaded the ordinary
way; a 2-adapter --blend with its forwards batched (peft's mixed-adapter batch) and one after another
(--no-blend-batched); a 3-term blend (two adapters + base); random-step (one adapter per step). Prints
milliseconds per denoising step (median of --repeats runs after one warm-up) and the ratio to the
plain single-adapter step. With --shape the architecture has random weights and random rank-16 LoRAs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import fields

import torch


def build(args):
    """(base ModelAdapter, peft-wrapped ModelAdapter with adapters 'a' and 'b')."""
    from peft import LoraConfig, PeftModel, get_peft_model

    from dllmrl.adapter_spec import NamedAdapter
    from dllmrl.config import ModelConfig
    from dllmrl.models import load_model
    from dllmrl.models.base import ModelAdapter

    dev = torch.device(args.device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    if args.shape:
        from dllmrl.models.shapes import random_shape_adapter

        base = random_shape_adapter(args.shape, layers=args.layers, hidden=args.hidden, heads=args.heads,
                                    device=dev, dtype=dtype)
        torch.manual_seed(1)
        lcfg = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
        wrapped = get_peft_model(base.model, lcfg, adapter_name=NamedAdapter("a", "-").peft_name)
        wrapped.add_adapter(NamedAdapter("b", "-").peft_name, lcfg)
        wrapped.to(device=dev, dtype=dtype).eval()
        peft = ModelAdapter(**{f.name: getattr(base, f.name) for f in fields(ModelAdapter) if f.init})
        peft.model = wrapped
        base = random_shape_adapter(args.shape, layers=args.layers, hidden=args.hidden, heads=args.heads,
                                    device=dev, dtype=dtype)
        return base, peft
    mk = lambda adapter: load_model(ModelConfig(model=args.model, adapter=adapter, device=args.device, dtype="auto"))
    peft = mk((f"a={args.adapter}", f"b={args.adapter}"))
    assert isinstance(peft.model, PeftModel)
    return mk(None), peft


def time_sample(model, ids, attn, cfg, repeats: int) -> float:
    """Median milliseconds per denoising step."""
    from dllmrl.sampling.sampler import sample

    sync = torch.cuda.synchronize if ids.device.type == "cuda" else (lambda: None)
    out = []
    for r in range(repeats + 1):
        gen = torch.Generator(device=ids.device).manual_seed(r)
        sync()
        t0 = time.perf_counter()
        traj = sample(model, ids, attn, cfg, generator=gen)
        sync()
        if r:  # the first run warms up
            out.append((time.perf_counter() - t0) * 1000 / traj.nfe)
    return statistics.median(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-llada")
    p.add_argument("--adapter", default="tiny-llada-adapters:sudoku/egspo-sa", help="DIR or DIR:SUBFOLDER")
    p.add_argument("--shape", default=None, help="llada-8b or dream-7b with random weights instead of --model")
    p.add_argument("--layers", type=int, default=None)
    p.add_argument("--hidden", type=int, default=None)
    p.add_argument("--heads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--gen-len", type=int, default=32)
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    from dllmrl.adapter_spec import NamedAdapter
    from dllmrl.config import BlendConfig, SamplerConfig
    from dllmrl.sampling.blend import apply_blend

    torch.set_grad_enabled(False)
    base, peft = build(args)
    named = (NamedAdapter("a", "-"), NamedAdapter("b", "-"))
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, min(base.vocab_size, 50), (args.batch, args.prompt_len), generator=g).to(dev)
    attn = torch.ones_like(ids)
    cfg = SamplerConfig(gen_len=args.gen_len, steps=args.steps, block_len=args.gen_len)
    variants = {
        "base model": base,
        "one adapter (plain --adapter)": peft,
        "--blend a=0.5,b=0.5 (batched)": apply_blend(peft, BlendConfig(blend="a=0.5,b=0.5"), named),
        "--blend a=0.5,b=0.5 --no-blend-batched": apply_blend(peft, BlendConfig(blend="a=0.5,b=0.5",
                                                                               blend_batched=False), named),
        "--blend a=0.4,b=0.4,base=0.2 (batched)": apply_blend(peft, BlendConfig(blend="a=0.4,b=0.4,base=0.2"), named),
        "--blend-mode random-step": apply_blend(peft, BlendConfig(blend="a=0.5,b=0.5", blend_mode="random-step"),
                                                named),
    }
    what = f"--shape {args.shape} (layers {args.layers}, hidden {args.hidden})" if args.shape else args.model
    print(f"{what} on {args.device}, batch {args.batch}, prompt {args.prompt_len}, gen_len {args.gen_len}, "
          f"steps {args.steps}, torch threads {torch.get_num_threads()}")
    ref = None
    print("| variant | ms / step | x one adapter |\n|---|---:|---:|")
    for name, model in variants.items():
        ms = time_sample(model, ids, attn, cfg, args.repeats)
        if name.startswith("one adapter"):
            ref = ms
        print(f"| {name} | {ms:.1f} | {ms / ref:.2f} |" if ref else f"| {name} | {ms:.1f} | |", flush=True)


if __name__ == "__main__":
    main()
