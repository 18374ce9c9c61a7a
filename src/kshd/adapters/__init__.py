"""What training adds to the frozen base, one file per kind behind `train.adapter` (LoRA,
LoCon, and LyCORIS' LoHa, LoKr and DoRA): injected and trained, saved for diffusers and
kohya/A1111, loaded and scaled for drawing. `base.py` is the seam, `registry.py` the kinds by
name, `files.py` the two files, `weights.py` what drawing loads, `peft_kohya.py` what the kinds
diffusers cannot read share (their kohya/LyCORIS file, both ways).
"""
