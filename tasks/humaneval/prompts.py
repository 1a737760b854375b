"""HumanEval prompt templates (the reference's, byte for byte, stray '" ' included)."""

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

# The 'train' user turn is the reference's code-training prompt: tasks/code.py, CodeTask.code_prompt.

REASONING = "I implement the function the docstring describes."
