"""The shipped tiny checkpoints, installed as package data of ``dllmrl.checkpoints``.

Each folder is an ordinary Hugging Face directory; ``--model tiny-llada`` finds it by its short name
(``dllmrl.model_defaults.find_model``) wherever dllmrl is installed.
"""
