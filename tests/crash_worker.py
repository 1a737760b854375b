"""A tiny LoRA SFT run for the crash tests, in a process of its own (so it can be killed with -9).

    PYTHONPATH=tests python tests/crash_worker.py MODEL_DIR OUT_DIR MAX_STEPS [--resume]

Exit status: 0 done, 130 interrupted (Ctrl-C / SIGTERM, checkpoint saved), 1 a DllmrlError (printed).
``SETTINGS`` is shared with tests/test_crash_safety.py, which runs the same training in-process.
"""

from __future__ import annotations

import sys

import torch

from dllmrl.config import ModelConfig
from dllmrl.errors import DllmrlError
from dllmrl.registry import TASKS
from dllmrl.tasks.base import Example
from dllmrl.training.sft import run_sft
from dllmrl.training.sft_config import SftConfig
from toy_tasks import ExactMatchToy


class ToyEcho(ExactMatchToy):
    """Repeat a 3-letter word over 'abc' (only the plumbing matters)."""

    name = "toy-echo-crash"
    prompt_styles = ("compact",)
    prefill = ""
    split_sizes = {"train": 27, "test": 3}

    def _load(self, split):
        words = [a + b + c for a in "abc" for b in "abc" for c in "abc"][: self.split_sizes[split]]
        return [Example(f"{split}-{i}", "", w) for i, w in enumerate(words)]

    def build_prompt(self, ex, prompt_style):
        return ex.target

    def sft_target(self, ex, prompt_style):
        return ex.target


if ToyEcho.name not in TASKS:
    TASKS.register(ToyEcho.name, ToyEcho)

SETTINGS = dict(task=ToyEcho.name, prompt_style="compact", gen_len=8, batch_size=4, lr=1e-2, warmup_steps=0,
                lora="on", lora_r=4, lora_alpha=8, lora_dropout=0.1, save_every=1, log_every=1, weight_decay=0.0)


def config(out: str, max_steps: int, resume: bool) -> SftConfig:
    return SftConfig(output=out, max_steps=max_steps, resume=resume, **SETTINGS)


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    model_dir, out, max_steps = argv[0], argv[1], int(argv[2])
    try:
        res = run_sft(config(out, max_steps, "--resume" in argv), ModelConfig(model=model_dir, device="cpu"))
    except DllmrlError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 130 if res.interrupted else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
