"""The values the config accepts where a key takes one of a few names.

Kept apart from the code that uses them (drawing, training, tracking) and free of imports, so
that checking a whole config at load (kshd.config.schema) makes no stage depend on the others' code.
"""

from __future__ import annotations

# sampler key -> (A1111 name, diffusers scheduler class, its options)
SAMPLERS: dict[str, tuple[str, str, dict]] = {
    "dpmpp_2m_karras": (
        "DPM++ 2M Karras",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": True},
    ),
    "dpmpp_2m": (
        "DPM++ 2M",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "use_karras_sigmas": False},
    ),
    "euler_a": ("Euler a", "EulerAncestralDiscreteScheduler", {}),
    "euler": ("Euler", "EulerDiscreteScheduler", {}),
    "heun": ("Heun", "HeunDiscreteScheduler", {}),
    "ddim": ("DDIM", "DDIMScheduler", {}),
    "unipc": ("UniPC", "UniPCMultistepScheduler", {}),
}
RESIZE_MODES = ("crop", "fill", "stretch")  # image-to-image input
# ControlNet: how the prompt and the control are balanced (A1111's Control Mode), and the
# preprocessors (drawing.control_images; "auto": the control type's usual one)
CONTROL_MODES = ("balanced", "prompt", "control")
PREPROCESSORS = ("auto", "lineart_standard", "invert", "scribble_xdog", "canny", "none")
INPAINT_AREAS = ("whole", "only_masked")
# how A1111 writes them in the PNG parameters (its ControlNet unit, its inpainting keys)
CONTROL_MODE_LABELS = {"balanced": "Balanced", "prompt": "My prompt is more important",
                       "control": "ControlNet is more important"}  # fmt: skip
RESIZE_LABELS = {"crop": "Crop and Resize", "fill": "Resize and Fill", "stretch": "Just Resize"}
INPAINT_AREA_LABELS = {"whole": "Whole picture", "only_masked": "Only masked"}
DEVICES = ("auto", "cpu", "cuda", "mps")
# live previews while drawing (drawing.preview): auto = TAESD where generate.preview.taesd is on
# disk, else cheap (A1111's "Approx cheap"); full = the base's own VAE
PREVIEW_METHODS = ("auto", "cheap", "taesd", "full")
SCHEDULERS = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
)
MIXED_PRECISIONS = ("no", "fp16", "bf16")
# torch.compile's modes (train.compile_mode); the two with CUDA graphs use them on CUDA only
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# its backends (train.compile_backend, kohya's --dynamo_backend): inductor generates kernels;
# aot_eager traces the same graphs forward and backward and runs them eagerly (seconds, not a
# C++ build: what the suite checks the wrapping with); cudagraphs replays CUDA graphs
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager", "cudagraphs")
PREDICTION_TYPES = (None, "epsilon", "v_prediction")
# model.clip_skip, A1111's and kohya's count: 1 the text encoder's last layer, 2 its penultimate
# (through the final layer norm), as the NAI-lineage anime models were trained
CLIP_SKIPS = (1, 2)
MAX_TOKEN_LENGTHS = (75, 150, 225)  # kohya's max_token_length: 1, 2 or 3 chunks of 75 tokens
TRACKING_MODES = ("auto", "online", "offline", "disabled")
TRIGGER_POSITIONS = ("start", "end")
# tag captions (caption.kind wd_tagger, tags_and_blip2) also take NoobAI-XL's artist slot: after
# the count and character tags, before the rest (kshd.captioners.tags.with_trigger_in_slot)
TAG_TRIGGER_POSITIONS = (*TRIGGER_POSITIONS, "artist")
NEAR_DUPLICATE_ACTIONS = ("report", "drop")  # prepare.near_duplicates
# the headline metrics (evaluation.evaluate.HEADLINE), which `evaluate.best_by` may name
BEST_BY = ("clip_score", "style_similarity", "style_gain", "memorization", "diversity")


def check_sampler(key: str, config_key: str) -> None:
    """An unknown sampler is named with its config key before any model is loaded."""
    from kshd.config.fill import require

    require(not key or key in SAMPLERS, config_key, key, f"one of {', '.join(SAMPLERS)}")
