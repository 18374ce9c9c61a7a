"""LoRA training: settings, the loop and its setup, batches, latent cache, checkpoints."""
