"""Evaluation: the resumable evaluation loop, re-scoring of saved completions, and the code sandbox."""
