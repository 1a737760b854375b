"""Training: the shared skeleton, RL rollouts and trainer, SFT, checkpoints, LoRA, accelerate set-up and metrics."""
