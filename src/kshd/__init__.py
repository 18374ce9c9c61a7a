"""KSH Drawing AI: teach Stable Diffusion one artist's drawing style with LoRA, reproducibly."""

__version__ = "0.1.0"
