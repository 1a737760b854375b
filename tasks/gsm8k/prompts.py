"""GSM8K prompt templates.

'eval': the reference's evaluation prompt (final answer in ``\\boxed{}`` inside ``<answer>``), then
the '<reasoning>' prefill. 'train': the reference's training prompt (a bare answer in ``<answer>``).
Both user turns are system prompt + "\\n\\n" + question.
"""

from dllmrl.tasks.formats import SYSTEM_PROMPT as TRAIN_SYSTEM_PROMPT  # the reference's general SYSTEM_PROMPT

# The reference's GSM_SYSTEM_PROMPT (eval/gsm8k.py), byte for byte (note the space after "\\boxed{}.").
EVAL_SYSTEM_PROMPT = """You are a math expert. You will be given a question to solve. Solve it step by step. Wrap the final answer in a \\boxed{}. 
Respond in the following format:
<reasoning>
Your reasoning here
</reasoning>
<answer>
\\boxed{...}
</answer>"""

# Gold completions for SFT (after the prefill): the worked solution without calculator annotations.
EVAL_TARGET = "\n{reasoning}\n</reasoning>\n<answer>\n\\boxed{{{answer}}}\n</answer>\n"
TRAIN_TARGET = "<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>\n"
