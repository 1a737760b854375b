"""``dllmrl sample PROMPT``: generate one completion and watch the masks turn into tokens."""

from __future__ import annotations

import json
import math
from typing import Annotated, Optional

import typer

from dllmrl.commands.options import (
    AdapterOpt, AdapterSubfolderOpt, BestOfNOpt, BlockLenOpt, CacheOpt, CacheRefreshOpt, CfgScaleOpt, DecodeOpt, DeviceOpt, DtypeOpt, GenLenOpt,
    GuidanceLrOpt, GuidanceOpt, GuidanceStepsOpt, ModelOpt, RemaskingOpt, RewardModelOpt, SeedOpt, StepsOpt,
    TemperatureOpt, ThresholdOpt, TrustRemoteCodeOpt,
)

EPILOG = """Examples:

  dllmrl sample "Solve: 2x+3=11"

  dllmrl sample "Solve this sudoku: 1030..." --model checkpoints/tiny-sudoku --gen-len 64 --steps 32

  dllmrl sample "hello" --model checkpoints/tiny-sudoku --json > traj.json
"""


def sample_command(
    prompt: Annotated[str, typer.Argument(help="The user message (the chat template is applied unless --raw).")],
    model: ModelOpt = "GSAI-ML/LLaDA-8B-Instruct",
    adapter: AdapterOpt = None,
    adapter_subfolder: AdapterSubfolderOpt = None,
    gen_len: GenLenOpt = None,  # type: ignore[assignment]
    steps: StepsOpt = None,  # type: ignore[assignment]
    block_len: BlockLenOpt = None,  # type: ignore[assignment]
    temperature: TemperatureOpt = None,  # type: ignore[assignment]
    cfg_scale: CfgScaleOpt = 0.0,
    remasking: RemaskingOpt = "low_confidence",
    decode: DecodeOpt = "fixed",
    threshold: ThresholdOpt = 0.9,
    cache: CacheOpt = "none",
    cache_refresh: CacheRefreshOpt = 0,
    seed: SeedOpt = 0,
    guidance: GuidanceOpt = "none",
    reward_model: RewardModelOpt = None,
    guidance_steps: GuidanceStepsOpt = 1,
    guidance_lr: GuidanceLrOpt = 1.0,
    best_of_n: BestOfNOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    trust_remote_code: TrustRemoteCodeOpt = False,
    raw: Annotated[bool, typer.Option("--raw", help="Send the prompt as it is, without the chat template.")] = False,
    prefill: Annotated[str, typer.Option("--prefill", help="Text placed after the generation prompt (e.g. '<reasoning>').")] = "",
    no_live: Annotated[bool, typer.Option("--no-live", help="Do not show the live unmasking view.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with the trajectory, and nothing else.")] = False,
    delay: Annotated[Optional[float], typer.Option("--delay", help="Seconds to pause after each step of the live view (to watch a fast model).")] = None,
) -> None:
    """Generate a completion, showing the tokens unmasking step by step.

    --gen-len, --steps, --block-len and --temperature not given come from the model directory's
    dllmrl.json, else 128, gen-len / 2, 32 and 0.
    """
    from dllmrl.config import ModelConfig, SamplerConfig
    from dllmrl.model_defaults import resolve

    r = resolve(model, {"gen_len": gen_len, "block_len": block_len, "temperature": temperature, "steps": steps},
                {"gen_len": 128, "block_len": 32, "temperature": 0.0, "steps": None})
    gen_len, block_len, temperature = int(r["gen_len"]), int(r["block_len"]), float(r["temperature"])
    steps = int(r["steps"]) if r["steps"] is not None else max(1, gen_len // 2)
    from dllmrl.sampling.guidance import GuidanceConfig

    scfg = SamplerConfig(gen_len=gen_len, steps=steps, block_len=block_len, temperature=temperature,
                         cfg_scale=cfg_scale, remasking=remasking, decode=decode, threshold=threshold,
                         cache=cache, cache_refresh=cache_refresh)
    mcfg = ModelConfig(model=model, adapter=adapter, adapter_subfolder=adapter_subfolder, device=device, dtype=dtype,
                       trust_remote_code=trust_remote_code)
    gcfg = GuidanceConfig(guidance=guidance, reward_model=reward_model, guidance_steps=guidance_steps,
                          guidance_lr=guidance_lr, best_of_n=best_of_n)

    import time

    import torch
    from rich.console import Console
    from rich.live import Live

    from dllmrl.sampling.guidance import check_vocabularies, guided_sample, load_reward_model
    from dllmrl.models import load_model
    from dllmrl.ui import UnmaskView, stderr_console

    adapter_ = load_model(mcfg)
    text = adapter_.render_prompt(prompt, chat=not raw, prefill=prefill)
    ids, attn = adapter_.encode([text])
    gen = torch.Generator(device=ids.device).manual_seed(seed)
    reward = None
    if gcfg.guidance != "none":
        reward = load_reward_model(gcfg.reward_model, adapter_.device, adapter_.dtype)
        check_vocabularies(adapter_, reward)
    guide_gen = torch.Generator(device=ids.device).manual_seed(seed + 1)

    def run(on_step=None):
        return guided_sample(adapter_, ids, attn, scfg, gcfg, reward, generator=gen, guidance_generator=guide_gen,
                             on_step=on_step)

    live = None
    on_step = None
    if not as_json and not no_live:
        view = UnmaskView(lambda i: adapter_.token_strings([i])[0])
        live = Live(console=Console(), auto_refresh=False, transient=False)

        def on_step(ev):
            row = ev.tokens[0, ev.prompt_len:].tolist()
            rev = ev.revealed[0, ev.prompt_len:].tolist()
            live.update(view.render(row, rev, adapter_.mask_id, ev.step, ev.total_steps), refresh=True)
            if delay:
                time.sleep(delay)

    t0 = time.perf_counter()
    if live is not None:
        with live:
            traj = run(on_step)
    else:
        traj = run()
    elapsed = time.perf_counter() - t0
    completion = adapter_.decode_completion(traj.completion_ids[0])

    if as_json:
        ent = [None if not math.isfinite(v) else v for v in traj.step_entropy[0].tolist()]
        out = {
            "prompt": text, "prompt_len": traj.prompt_len, "tokens": traj.tokens[0].tolist(),
            "unmask_step": traj.unmask_step[0].tolist(), "step_entropy": ent,
            "step_logp": traj.step_logp[0].tolist(), "step_count": traj.step_count[0].tolist(),
            "nfe": traj.nfe, "seconds": round(elapsed, 4), "text": completion,
            "config": {**scfg.__dict__, **gcfg.__dict__, "model": model, "adapter": adapter, "seed": seed},
        }
        typer.echo(json.dumps(out))
        return
    console = Console()
    console.rule("completion")
    console.print(completion, markup=False, highlight=False)
    stderr_console().print(f"[dim]{traj.nfe} forward passes, {elapsed:.2f}s[/]")


def register(app: typer.Typer) -> None:
    app.command("sample", epilog=EPILOG, no_args_is_help=True)(sample_command)
