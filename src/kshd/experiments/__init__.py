"""Experiments: DVC commands, sweeps, comparing runs, wandb tracking, the demo."""
