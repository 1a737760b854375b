"""HumanEval prompt templates (the reference's, byte for byte, stray '" ' included)."""

from ..formats import SYSTEM_PROMPT as TRAIN_SYSTEM_PROMPT  # the reference's general SYSTEM_PROMPT

EVAL_SYSTEM_PROMPT = """You are a coding expert. You will be given a coding problem to solve. Solve it step by step.

Respond in the following format:
<reasoning>
Your reasoning here
</reasoning>
<answer>
```python
Your code here
```
</answer>" 
"""

# The reference's code-training prompt (egspo/data_utils.py get_code_questions).
TRAIN_INSTRUCTION = "You are a coding expert. You will be given a coding problem to solve. Solve it step by step. \n\n"

REASONING = "I implement the function the docstring describes."
