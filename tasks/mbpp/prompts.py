"""MBPP prompt templates (the reference's, byte for byte: the doubled backtick and stray '" ' included)."""

EVAL_SYSTEM_PROMPT = """You are a coding expert. You will be given a coding problem to solve. Solve it step by step. Ensure you wrap the answer in ```python````

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

# The question as the reference builds it (note the space before "Your").
QUESTION = "{text}\n\n Your code should pass the following tests:\n\n{tests}"

# The 'train' user turn is the reference's code-training prompt: tasks/code.py, CodeTask.code_prompt.

REASONING = "I write the function the tests call."
