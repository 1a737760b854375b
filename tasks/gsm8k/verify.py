"""GSM8K's one answer extractor and numeric comparison.

Extraction follows the reference's evaluation parser: the first ``\\boxed{}`` whose content reads as
a number (else the first number inside it), else the LAST number inside the first
``<answer>...</answer>``. Answers are compared as numbers, so "1,000" = "1000" = "1000.00" = "$1,000".

Deliberate fixes: thousands separators are removed before reading a number (the reference reads
"1,000" as 1); boxes are brace-matched (the reference's ``\\boxed{(.*?)}`` stops at the first "}"),
except a box that never closes, which is read up to its first "}" as the reference does;
gold answers may be negative (the reference's gold regex drops "-3", so those rows can never be right).
"""

from __future__ import annotations

import re

from dllmrl.tasks.common import all_boxed, answer_tag

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")


def _clean(text: str) -> str:
    text = _THOUSANDS.sub("", text)
    for junk in ("$", "\\$", "\\!", "\\,", "%", "\\%"):
        text = text.replace(junk, "")
    return text.strip()


def _as_number(text: str) -> float | None:
    try:
        return float(_clean(text))
    except ValueError:
        return None


def _numbers(text: str) -> list[float]:
    return [float(n) for n in _NUMBER.findall(_clean(text))]


def fmt(x: float) -> str:
    """A number as the record shows it: "18", "-3", "0.5"."""
    return str(int(x)) if float(x).is_integer() else repr(x)


def extract(completion: str) -> str | None:
    """The final answer as a number string, or None."""
    for content in all_boxed(completion, unclosed=True):
        content = content.strip()
        if not content or set(content) <= {"."}:  # the prompt's own "\boxed{...}" placeholder
            continue
        value = _as_number(content)
        if value is None:
            found = _numbers(content)
            value = found[0] if found else None
        if value is not None:
            return fmt(value)
    tagged = answer_tag(completion)
    if tagged:
        value = _as_number(tagged)
        if value is None:
            found = _numbers(tagged)
            value = found[-1] if found else None
        if value is not None:
            return fmt(value)
    return None


def gold_answer(solution: str) -> str | None:
    """The number after '####' in a GSM8K worked solution (negatives and separators included)."""
    if "####" not in solution:
        return None
    value = _as_number(solution.split("####")[-1])
    return None if value is None else fmt(value)


def same_number(pred: str | None, gold: str | None) -> bool:
    if pred is None or gold is None:
        return False
    return abs(float(pred) - float(gold)) < 1e-6


def strip_calculator(reasoning: str) -> str:
    """Remove the '<<48/2=24>>' calculator annotations from a worked solution."""
    return re.sub(r"<<[^>]*>>", "", reasoning)
