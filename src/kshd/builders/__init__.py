"""Builders of local models: tiny test models, the CLIP tokenizer, SD 1.5-shaped weights.

Users never need them; the demo and the tests do.
"""
