"""Sampling: the exact LLaDA sampler, its typed trajectory, the greedy-completion keepers and reward guidance."""
