"""What training adds to the frozen base (LoRA and its kin): injected, saved for diffusers and
kohya/A1111, loaded for drawing.
"""
