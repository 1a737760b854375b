"""Shared Typer options, as ``Annotated`` aliases reused across commands.

Help texts come from the config dataclasses' field docstrings where one exists, so the
CLI and the configs cannot drift apart (tests/test_cli.py checks every field has an option).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Hub id or local directory of the diffusion LM (e.g. checkpoints/tiny-sudoku).")]
AdapterOpt = Annotated[Optional[str], typer.Option("--adapter", help="peft LoRA adapter: a directory or a hub id.")]
AdapterSubfolderOpt = Annotated[Optional[str], typer.Option("--adapter-subfolder", help="Subfolder of --adapter (e.g. gsm8k/egspo-sa).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:N.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16.")]
TrustRemoteCodeOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Run the model repository's own code (escape hatch for unknown architectures).")]
GenLenOpt = Annotated[int, typer.Option("--gen-len", help="Generated positions, all masked at the start.")]
StepsOpt = Annotated[int, typer.Option("--steps", help="Denoising steps in total, split evenly across blocks.")]
BlockLenOpt = Annotated[int, typer.Option("--block-len", help="Semi-autoregressive block length; must divide --gen-len.")]
TemperatureOpt = Annotated[float, typer.Option("--temperature", help="Gumbel temperature for candidate tokens; 0 is greedy.")]
CfgScaleOpt = Annotated[float, typer.Option("--cfg-scale", help="Classifier-free guidance scale (0 = off; > 0 doubles the forwards).")]
RemaskingOpt = Annotated[str, typer.Option("--remasking", help="low_confidence (most probable first) or random.")]
DecodeOpt = Annotated[str, typer.Option("--decode", help="fixed (exact step schedule) or threshold (also reveal positions above --threshold; blocks end early).")]
ThresholdOpt = Annotated[float, typer.Option("--threshold", help="Confidence threshold for --decode threshold.")]
CacheOpt = Annotated[str, typer.Option("--cache", help="Fast-dLLM key/value cache for native LLaDA and Dream: none, prefix (reuse the keys/values before the block) or dual (also after it); refreshed at each block start.")]
CacheRefreshOpt = Annotated[int, typer.Option("--cache-refresh", help="With --cache: also refresh every this many steps inside a block (0: block starts only).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the sampler's torch.Generator.")]
GuidanceOpt = Annotated[str, typer.Option("--guidance", help="Reward guidance: none, expectation, aps, entrgi or best-of-n (needs --reward-model).")]
RewardModelOpt = Annotated[Optional[str], typer.Option("--reward-model", help="Sequence-classification reward model sharing the DLLM's vocabulary (directory or hub id).")]
GuidanceStepsOpt = Annotated[int, typer.Option("--guidance-steps", help="Gradient steps on the logits per denoising step.")]
GuidanceLrOpt = Annotated[float, typer.Option("--guidance-lr", help="Step size of the logit update.")]
BestOfNOpt = Annotated[Optional[int], typer.Option("--best-of-n", help="Candidates for --guidance best-of-n (default: steps x guidance-steps, the guided methods' reward calls).")]
