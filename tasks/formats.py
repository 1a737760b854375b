"""The ``<reasoning>...</reasoning><answer>...</answer>`` layout: the reference's training prompt for it
and its format rewards.

They judge layout only, never the answer, so they sit beside the packs' single answer extractor
rather than duplicating it. Each returns 1.0 at best; the pack gives the weight (the reference's
0.5 becomes weight 0.5).

Deliberate fix: the reference's ``soft_format`` and ``strict_format`` patterns lack ``re.DOTALL``,
so ``.*?`` cannot cross a newline and any multi-line reasoning (nearly all of it) never earns
them. Here they match across lines.
"""

from __future__ import annotations

import re

# The reference's general SYSTEM_PROMPT (egspo/data_utils.py), byte for byte, which its training
# prompts open with; so do the packs' 'train' prompt styles (TRAIN_SYSTEM_PROMPT, CodeTask.code_prompt).
SYSTEM_PROMPT = """
Respond in the following format:
<reasoning>
...
</reasoning>
<answer>
...
</answer>
"""

_SOFT = re.compile(r"<reasoning>.*?</reasoning>\s*<answer>.*?</answer>", re.DOTALL)
_STRICT = re.compile(r"^<reasoning>\n.*?\n</reasoning>\n<answer>\n.*?\n</answer>\n?$", re.DOTALL)


def soft_format(text: str) -> float:
    """1.0 when the text opens with a reasoning block followed by an answer block."""
    return 1.0 if _SOFT.match(text) else 0.0


def strict_format(text: str) -> float:
    """1.0 when the text is exactly the prompted layout, one tag per line.

    The reference demands a final newline after ``</answer>``; our decoding cuts the completion
    at end-of-turn and tokenizers often drop that newline, so it is optional here.
    """
    return 1.0 if _STRICT.match(text) else 0.0


def xml_count(text: str) -> float:
    """The reference's ``count_xml``: 0.125 per well-placed tag, minus 0.001 per character after the answer."""
    score = 0.0
    if text.count("<reasoning>\n") == 1:
        score += 0.125
    if text.count("\n</reasoning>\n") == 1:
        score += 0.125
    if text.count("\n<answer>\n") == 1:
        score += 0.125
        score -= len(text.split("\n</answer>\n")[-1]) * 0.001
    if text.count("\n</answer>") == 1:
        score += 0.125
        score -= (len(text.split("\n</answer>")[-1]) - 1) * 0.001
    return score
