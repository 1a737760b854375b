"""dllmrl: reinforcement learning and evaluation for diffusion language models.

Entry point: the ``dllmrl`` command (see ``dllmrl --help``). Library code lives in
submodules; importing this package imports nothing heavy (no torch).
"""

__version__ = "0.1.0"
