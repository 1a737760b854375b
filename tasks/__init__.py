"""Task packs: prompts, data, one answer extractor, a verifier and reward functions per benchmark.

Built-in packs are registered lazily in ``dllmrl.registry.TASKS``; third-party packs register
through the ``dllmrl.tasks`` entry-point group (value ``"package.module:TaskClass"``).
"""
