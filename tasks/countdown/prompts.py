"""Countdown prompt templates (three numbers, one target).

'eval': the reference's evaluation prompt (answer as ``\\boxed{}`` inside ``<answer>``), user turn
= CTD_SYSTEM_PROMPT + "\\n\\n" + "Numbers: [a, b, c]\\nTarget: t", then the '<reasoning>' prefill.
'train': the reference's training prompt (bare expression inside ``<answer>``; it joins the
general SYSTEM_PROMPT and the question with a single newline). 'compact': "a b c -> t", completion
the expression alone.
"""

from dllmrl.tasks.formats import SYSTEM_PROMPT as TRAIN_SYSTEM_PROMPT  # the reference's general SYSTEM_PROMPT

# The reference's CTD_SYSTEM_PROMPT, byte for byte (note the missing space before "Respond").
EVAL_SYSTEM_PROMPT = (
    "Using only the provided numbers, create an arithmetic expression that evaluates to exactly the provided "
    "target number. You may use the operations +, -, *, and / as needed, but each number must be used exactly "
    "once. Think step-by-step. After reasoning, provide only your final expression inside \\boxed{} tags without "
    "including an equals sign or the target number. For example: \\boxed{a + b * c}"
    "Respond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n<answer>\n\\boxed{...}\n</answer>"
)
EVAL_QUESTION = "Numbers: {numbers}\nTarget: {target}"
# (Not joined into one template: the system prompt's literal braces would clash with str.format.)

TRAIN_USER_TURN = (
    TRAIN_SYSTEM_PROMPT
    + "\nUsing only the numbers {numbers}, create an arithmetic expression that evaluates to exactly {target}. "
    "You must use all numbers from the list, and each number must be used exactly once. You may use the "
    "operations +, -, *, and / as needed. After reasoning, provide only your final expression inside "
    "<answer></answer> tags without including an equals sign or the target number. For example, if the numbers "
    "are [2, 3, 4] and the target is 5, a valid answer is: <answer>\n2*4-3\n</answer>"
)

COMPACT = "{spaced} -> {target}"

# Gold completions for SFT (after the prefill).
REASONING = "{expression} = {target}, using each of {numbers} once."
EVAL_TARGET = "\n{reasoning}\n</reasoning>\n<answer>\n\\boxed{{{expression}}}\n</answer>\n"
TRAIN_TARGET = "<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{expression}\n</answer>\n"
