"""MATH500 prompt templates.

'eval': the reference's MATH500_SYSTEM_PROMPT (with its stray '" ' after ``</answer>`` and trailing
newline, kept byte for byte) + "\\n\\n" + problem, then the '<reasoning>' prefill. 'train': the
reference's training prompt.
"""

from dllmrl.tasks.formats import SYSTEM_PROMPT as TRAIN_SYSTEM_PROMPT  # the reference's general SYSTEM_PROMPT

EVAL_SYSTEM_PROMPT = """You are a math expert. You will be given a question to solve. Solve it step by step. Wrap the final answer in a \\boxed{}.
Respond in the following format:
<reasoning>
Your reasoning here
</reasoning>
<answer>
\\boxed{...}
</answer>" 
"""

TRAIN_INSTRUCTION = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}. \n\n"
)

EVAL_TARGET = "\n{reasoning}\n</reasoning>\n<answer>\n\\boxed{{{answer}}}\n</answer>\n"
TRAIN_TARGET = "<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n\\boxed{{{answer}}}\n</answer>\n"
