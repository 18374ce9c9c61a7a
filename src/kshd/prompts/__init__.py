"""Prompts and captions as CLIP reads them: A1111 weights, 75-token chunks, SD 1.x and SDXL
encoders.
"""
