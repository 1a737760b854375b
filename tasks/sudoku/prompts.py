"""Sudoku prompt templates.

'eval' and 'train' are the reference's (d1 / EGSPO): the same system prompt and question in both,
the eval run prefilling '<reasoning>'. 'compact' is for the tiny character-level models: the user
turn is the 16-character puzzle, the completion the 16-digit solution.
"""

# The reference's SUDOKU_SYSTEM_PROMPT, byte for byte (it starts with a newline).
SYSTEM_PROMPT = """
Please solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character string reading left-to-right, top-to-bottom, where '0' represents empty cells.

Rules:
- Fill empty cells with digits 1-4
- Each row must contain digits 1-4 exactly once
- Each column must contain digits 1-4 exactly once
- Each 2x2 box must contain digits 1-4 exactly once

Important: Your solution must be a COMPLETE 16-character string with only the digits 1-4, representing your final solved grid.

Respond in this exact format:
<reasoning>
Your step-by-step solving process
</reasoning>
<answer>
[16-character solution string with no spaces or separators]
</answer>
"""

QUESTION = "Solve the following Sudoku puzzle: {puzzle}\n"

# User turn = SYSTEM_PROMPT + "\n\n" + question, as in both reference repositories.
USER_TURN = SYSTEM_PROMPT + "\n\n" + QUESTION

COMPACT = "{puzzle}"

# Gold completion for SFT in the reasoning styles: a plain fill-in trace, then the grid.
REASONING_LINE = "Row {row}, column {col}: {digit}"
TARGET = "\n{reasoning}\n</reasoning>\n<answer>\n{solution}\n</answer>\n"
