"""Evaluation: sampling as the app draws, metrics, the LoRA-vs-base comparison, the report."""
