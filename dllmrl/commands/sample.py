"""``dllmrl sample PROMPT``: generate one completion and watch the masks turn into tokens."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Annotated, Optional

import typer

from dllmrl.commands.options import Resolved, config_options
from dllmrl.config import BlendConfig, GuidanceConfig, ModelConfig, SamplerConfig, model_max_positions


@dataclass(frozen=True)
class SampleConfig:
    """The prompt-side options of ``dllmrl sample``."""

    seed: int = 0
    """Seed of the sampler's torch.Generator."""
    raw: bool = False
    """Send the prompt as it is, without the chat template."""
    prefill: str = ""
    """Text placed after the generation prompt (e.g. '<reasoning>')."""


EPILOG = """Examples:

  dllmrl sample "Solve: 2x+3=11"

  dllmrl sample "1030020000400201" --model checkpoints/tiny-llada --gen-len 16 --steps 8

  dllmrl sample "1030020000400201" --model checkpoints/tiny-llada --json > traj.json

  dllmrl sample "..." --model BASE --adapter sudoku=DIR1 --adapter countdown=DIR2 --blend sudoku=0.5,countdown=0.5
"""


@config_options("sample", SamplerConfig, ModelConfig, GuidanceConfig, BlendConfig, SampleConfig)
def sample_command(
    prompt: Annotated[str, typer.Argument(help="The user message (the chat template is applied unless --raw).")],
    no_live: Annotated[bool, typer.Option("--no-live", help="Do not show the live unmasking view.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object with the trajectory, and nothing else.")] = False,
    delay: Annotated[Optional[float], typer.Option("--delay", help="Seconds to pause after each step of the live view (to watch a fast model).")] = None,
    opts: Resolved = None,  # type: ignore[assignment]
) -> None:
    """Generate a completion, showing the tokens unmasking step by step.

    Options not given come from --config, then the model directory's dllmrl.json, then the defaults shown.
    """
    scfg, mcfg, gcfg = opts.build(SamplerConfig), opts.build(ModelConfig), opts.build(GuidanceConfig)
    bcfg = opts.build(BlendConfig)
    seed, raw, prefill = opts["seed"], opts["raw"], opts["prefill"]
    model, adapter = mcfg.model, mcfg.adapter

    import time

    import torch
    from rich.console import Console
    from rich.live import Live

    from dllmrl.sampling.guidance import check_vocabularies, guided_sample, load_reward_model
    from dllmrl.models import load_model
    from dllmrl.ui import UnmaskView, stderr_console

    from dllmrl.adapter_spec import named_adapters
    from dllmrl.sampling.blend import apply_blend, check_blend

    named = named_adapters(mcfg.adapter, mcfg.adapter_subfolder)
    check_blend(bcfg, named, scfg.cache)  # a bad blend fails before the weights load
    adapter_ = apply_blend(load_model(mcfg), bcfg, named, scfg.cache)
    text = adapter_.render_prompt(prompt, chat=not raw, prefill=prefill)
    ids, attn = adapter_.encode([text])
    scfg.check_fits(model_max_positions(adapter_.model), ids.shape[1])
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
            "config": {**scfg.__dict__, **gcfg.__dict__, "model": model, "adapter": adapter, "seed": seed,
                       **({"blend": bcfg.record(named, seed)} if bcfg.active else {})},
        }
        if bcfg.blend_kl:
            out["kl_to_base"] = adapter_.kl_to_base
        typer.echo(json.dumps(out))
        return
    console = Console()
    console.rule("completion")
    console.print(completion, markup=False, highlight=False)
    stderr_console().print(f"[dim]{traj.nfe} forward passes, {elapsed:.2f}s[/]")
    if bcfg.blend_kl:
        stderr_console().print(f"mean KL(blend || base) per decoded position and step: {adapter_.kl_to_base:.4f} nats")


def register(app: typer.Typer) -> None:
    app.command("sample", epilog=EPILOG, no_args_is_help=True)(sample_command)
