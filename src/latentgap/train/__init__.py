"""Training: the trainer, checkpoints, run directories and distributed helpers."""
