"""Drawing with the trained LoRA: request, engine, PNG info, the GUI and the CLI commands."""
