"""The drawing engine behind `kshd gui`, `kshd generate` and `kshd img2img`.

The base model and the LoRA are loaded once; text-to-image and image-to-image share the weights
(`from_pipe`). The LoRA is fused into the UNet, and into the text encoder when it has a
text-encoder part, at the requested strength and stays fused while the strength does not change
(as fast as the base model); a new strength restores the saved base weights exactly and fuses
again, so strength 0 is the base model bit for bit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from kshd import __version__
from kshd.drawing.control import (
    ControlNets,
    control_call,
    sketch_control,
    soft_injection,
    unit_infotext,
)
from kshd.drawing.inpaint import (
    inpaint_call,
    inpaint_inputs,
    inpaint_params,
    inpaint_pipeline,
    paste_back,
)
from kshd.drawing.lora_switching import LoraSwitching
from kshd.drawing.pace import MEGA, Pace, work
from kshd.drawing.pnginfo import format_parameters, save_png
from kshd.drawing.request import (
    FROM_CONF,
    SAMPLERS,
    Limits,
    Request,
    fill_from_conf,
    first_seed,
    input_picture,
    resize_input,
    validate,
)
from kshd.models.family import SD1, SDXL, is_single_file
from kshd.models.identity import a1111_hash, model_identity
from kshd.models.loading import device_and_dtype, load_sd_pipeline
from kshd.models.source import check_model_source
from kshd.prompts.sdxl import pipe_embeds, prompt_encoder

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (steps done, steps in the request)


@dataclass(frozen=True)
class EngineSettings:
    """What the engine loads and where it saves. A `generate` field left out (device to limits)
    takes conf/'s value, so `EngineSettings("model")` works without the defaults in code;
    `drawing.settings.engine_settings` fills every field from the composed config."""

    pretrained: str
    revision: str | None = None  # None: the model's main branch, not a default of conf/
    variant: str | None = None
    single_file_config: str | None = None  # a .safetensors base's configs (model.*)
    lora: str | None = None  # a LoRA folder (models/lora) or .safetensors file; None = base only
    embeddings: tuple[tuple[str, str], ...] = ()  # textual inversion: (name, .safetensors file)
    device: str = FROM_CONF  # auto | cpu | cuda | mps
    attention_slicing: bool = FROM_CONF
    vae_tiling: bool = FROM_CONF
    outputs_dir: str = FROM_CONF
    limits: Limits = FROM_CONF
    # ControlNets: {control type: hub id or folder}, loaded when a request first names the type
    control_models: dict[str, str] = FROM_CONF
    inpaint_model: str | None = FROM_CONF  # a 9-channel inpainting SD; None: the base, blended
    # the model's own schedule (model.prediction_type / zero_terminal_snr; None, False: as its
    # scheduler config says), and rescaled CFG for a zero-terminal-SNR base
    prediction_type: str | None = None
    zero_terminal_snr: bool = False
    guidance_rescale: float = FROM_CONF

    def __post_init__(self) -> None:
        fill_from_conf(self, {"control_models": "control.models", "inpaint_model": "inpaint.model"})


@dataclass
class Generated:
    images: list[Image.Image]
    seeds: list[int]
    infotexts: list[str]
    paths: list[Path]
    stopped: str | None = None  # "interrupt" or "skip" when the user stopped part of it


@dataclass
class Inputs:
    """What a request draws from: the picture (image-to-image, inpainting), the inpainting's
    blurred mask, the ControlNet's control image and its unit's PNG parameters."""

    picture: Image.Image | None = None
    mask: Image.Image | None = None
    control: Image.Image | None = None
    unit: str | None = None


class _Stop(Exception):
    """Raised from the step callback: the batch in progress is dropped without a VAE decode."""


INTERRUPT, SKIP = "interrupt", "skip"


def _strength(req: Request) -> float:
    return req.strength if req.image is not None else 1.0


def _device(name: str) -> tuple[torch.device, torch.dtype]:
    if name == "auto":
        return device_and_dtype()
    device = torch.device(name)
    return device, torch.float32 if device.type == "cpu" else torch.float16


def _model_name_and_hash(settings: EngineSettings) -> tuple[str, str | None]:
    """A1111's "Model" and "Model hash": a single file's stem and its sha256 (what Civitai
    looks a base up by), a folder's name and content digest, a Hub id's last part and none."""
    path = Path(settings.pretrained.rstrip("/")).expanduser()
    if is_single_file(path):
        return path.stem, a1111_hash(path)
    identity = model_identity(settings.pretrained, settings.revision)
    return path.name, identity["content"][:10] if "content" in identity else None


class Engine(LoraSwitching):
    """Loads once, draws many times; one request at a time (a lock guards the model)."""

    def __init__(self, settings: EngineSettings):
        from diffusers import AutoPipelineForImage2Image

        check_model_source(
            settings.pretrained, "model.pretrained", "model_index.json", settings.revision
        )
        self.settings = settings
        self.limits = settings.limits
        self.notes: list[str] = []  # said once to the user (log, GUI)
        self.device, dtype = _device(settings.device)
        pipe = load_sd_pipeline(
            settings.pretrained, settings.revision, settings.variant, self.device, dtype,
            settings.prediction_type, settings.zero_terminal_snr, settings.single_file_config,
        )  # fmt: skip
        self.family = SDXL if getattr(pipe, "text_encoder_2", None) is not None else SD1
        if settings.attention_slicing:
            pipe.enable_attention_slicing()
        if settings.vae_tiling:
            pipe.vae.enable_tiling()
        self.txt2img = pipe
        self.img2img = AutoPipelineForImage2Image.from_pipe(pipe)  # SD 1.x's or SDXL's
        self.img2img.set_progress_bar_config(disable=True)
        self._base_scheduler = pipe.scheduler.config
        self.model_name, self.model_hash = _model_name_and_hash(settings)
        self.lora_name = self.lora_hash = self.lora_path = None
        if settings.lora:
            self._load_lora(settings.lora)
        self.encoder = prompt_encoder(pipe, self._embeddings())
        self._scale: float | None = None  # strength fused into the UNet (None: not fused)
        self._originals: dict[str, torch.Tensor] = {}
        self.lock = threading.Lock()
        self._owner: str | None = None  # who the job in progress belongs to (a GUI session)
        self._stop: str | None = None  # INTERRUPT or SKIP, asked for the job in progress
        self._stopped: str | None = None  # what stopped a batch of the job in progress
        self.pace = Pace()  # seconds per step-image-megapixel, for the queue's estimate
        self.controls = ControlNets(dict(settings.control_models), pipe, self.device, dtype)
        self._inpaint = None  # the inpainting pipeline, made when first asked for

    def stop(self, how: str, owner: str | None = None) -> bool:
        """Ask the job in progress to stop (INTERRUPT: keep the finished batches, draw no more;
        SKIP: drop the batch in progress, go on with the next) at its next step. Only the job of
        `owner` when given; False when there is no such job."""
        if how not in (INTERRUPT, SKIP):
            raise ValueError(f"stop: {how!r} is not {INTERRUPT!r} or {SKIP!r}")
        if not self.lock.locked() or (owner is not None and owner != self._owner):
            return False
        self._stop = how
        return True

    def _lora_changed(self) -> None:
        self._inpaint = None  # a separate inpainting UNet holds the LoRA of its own

    def _note(self, message: str) -> None:
        log.warning("%s", message)
        self.notes.append(message)

    def _embeddings(self) -> dict[str, int]:
        """Load the listed textual inversions; a name whose file is missing is said once."""
        from kshd.models.loading import load_embeddings

        vectors, notes = load_embeddings(self.txt2img, dict(self.settings.embeddings))
        for note in notes:
            self._note(note)
        return vectors

    def _scheduler(self, key: str):
        import diffusers

        _, cls, options = SAMPLERS[key]
        return getattr(diffusers, cls).from_config(self._base_scheduler, **options)

    def infotext(self, req: Request, seed: int, unit: str | None = None) -> str:
        """A1111's `parameters` of one image (`unit`: its ControlNet unit, `unit_infotext`)."""
        prompt = req.full_prompt
        lora = self.lora_name is not None and req.lora_scale != 0
        if lora:
            prompt += f" <lora:{self.lora_name}:{req.lora_scale:g}>"
        params = {
            "Steps": req.steps,
            "Sampler": SAMPLERS[req.sampler][0],
            "CFG scale": f"{req.cfg_scale:g}",
            "Seed": seed,
            "Size": f"{req.width}x{req.height}",
            "Model hash": self.model_hash,
            "Model": self.model_name,
            "Model family": self.family,
            "Denoising strength": f"{req.strength:g}" if req.image is not None else None,
            **(inpaint_params(req) if req.mask is not None else {}),
            "ControlNet 0": unit,
            "Lora hashes": f"{self.lora_name}: {self.lora_hash}" if lora else None,
            "Version": f"kshd {__version__}",
        }
        return format_parameters(prompt, req.full_negative, params)

    def generate(
        self,
        req: Request,
        progress: Progress | None = None,
        save: bool = True,
        folder: str | Path | None = None,
        owner: str | None = None,
    ) -> Generated:
        """Draw `req.batch_count` batches of `req.batch_size`; save each PNG with its parameters.

        PNGs go to `folder`, or by default to `<outputs_dir>/<txt2img|img2img>/<date>/`. `owner`
        names the job for `stop`; a stopped job returns the batches it finished.
        """
        req = validate(req, self.limits)
        given = self._inputs(req)
        start = first_seed(req.seed)
        seeds = [(start + i) % (2**32) for i in range(req.count)]
        with self.lock:
            self._owner, self._stop, self._stopped = owner, None, None
            self.pace.start(work(req.steps, req.count, req.width, req.height, _strength(req)))
            try:
                images, seeds = self._draw(req, given, seeds, progress or (lambda d, t: None))
            finally:
                stopped, self._owner, self._stop = self._stopped, None, None
                self.pace.finish()
        if given.mask is not None:  # the picture's own pixels outside the (blurred) mask
            images = [paste_back(im, given.picture, given.mask) for im in images]
        infotexts = [self.infotext(req, s, given.unit) for s in seeds]
        paths = []
        if save:
            folder = folder or Path(self.settings.outputs_dir) / req.kind / date.today().isoformat()
            items = zip(images, infotexts, seeds, strict=True)
            paths = [save_png(im, text, folder, seed) for im, text, seed in items]
        return Generated(images, seeds, infotexts, paths, stopped)

    def control_preview(self, req: Request) -> Image.Image:
        """The control image a sketch request draws from (the lines its preprocessor found)."""
        return sketch_control(validate(req, self.limits), self.limits)[0]

    def _inputs(self, req: Request) -> Inputs:
        """The pictures a request draws from, read and fitted before the model is taken."""
        if req.mask is not None:
            return Inputs(*inpaint_inputs(req, self.limits))
        given = Inputs()
        if req.image is not None:
            picture = input_picture(req.image, self.limits)
            given.picture = resize_input(picture, req.width, req.height, req.resize_mode)
        if req.control_image is not None:
            given.control, preprocessor = sketch_control(req, self.limits)
            model = self.controls.pipelines(req.control_type)[2]
            given.unit = unit_infotext(req, preprocessor, model)
        return given

    def _pipeline(self, req: Request, given: Inputs) -> tuple[Any, dict]:
        """The pipeline of a request and its own arguments (size, picture, ControlNet unit)."""
        picture, control = given.picture, given.control
        if given.mask is not None:
            if self._inpaint is None:
                self._inpaint = inpaint_pipeline(self.txt2img, self.settings.inpaint_model,
                                                 self._adapter_into())  # fmt: skip
            call = inpaint_call(req, picture, given.mask)
            if self.settings.inpaint_model and self.lora_name:  # its own UNet: LoRA unmerged
                call["cross_attention_kwargs"] = {"scale": req.lora_scale}
            return self._inpaint, call
        if control is not None:
            txt2img, img2img, _ = self.controls.pipelines(req.control_type)
            return txt2img if picture is None else img2img, control_call(req, control, picture)
        if picture is None:
            return self.txt2img, {"width": req.width, "height": req.height}
        return self.img2img, {"image": picture, "strength": req.strength}

    def _draw(
        self, req: Request, given: Inputs, seeds: list[int], progress: Progress
    ) -> tuple[list[Image.Image], list[int]]:
        """The images and their seeds; a batch stopped by `stop` is left out."""
        self.set_lora_scale(req.lora_scale)
        picture, control = given.picture, given.control
        if picture is not None and int(req.steps * req.strength) == 0:
            progress(1, 1)  # strength 0: no denoising step, the picture comes back as it is
            return [picture.copy() for _ in seeds], seeds
        pipe, call = self._pipeline(req, given)
        pipe.scheduler = self._scheduler(req.sampler)
        pos, neg = self.encoder.encode_pair(req.full_prompt, req.full_negative)
        call |= {"num_inference_steps": req.steps, "guidance_scale": req.cfg_scale}
        if self.settings.zero_terminal_snr and self.settings.guidance_rescale:
            call["guidance_rescale"] = self.settings.guidance_rescale
        prompt_soft = control is not None and req.control_mode == "prompt"
        with soft_injection(getattr(pipe, "controlnet", None), prompt_soft):
            return self._batches(req, pipe, call, (pos, neg), seeds, progress)

    def _batches(self, req: Request, pipe, call: dict, embeds, seeds: list[int], progress):
        """Draw the request's batches with `pipe(**call)`; Interrupt and Skip end them."""
        images: list[Image.Image] = []
        kept: list[int] = []
        pixels = req.width * req.height
        for b in range(req.batch_count):
            if self._stop == INTERRUPT:
                break
            self._stop = None  # a skip stops one batch
            batch = seeds[b * req.batch_size : (b + 1) * req.batch_size]
            unit = len(batch) * pixels / MEGA  # a step's work: images x megapixels

            def step_end(p, i, t, kwargs, b=b, unit=unit):
                if self._stop:
                    raise _Stop
                per_batch = p.num_timesteps
                self.pace.step(b * per_batch + i + 1, per_batch, unit)
                progress(b * per_batch + i + 1, req.batch_count * per_batch)
                return kwargs

            try:
                images += pipe(
                    **pipe_embeds(*embeds, len(batch)),
                    generator=[torch.Generator("cpu").manual_seed(s) for s in batch],
                    callback_on_step_end=step_end,
                    **call,
                ).images
                kept += batch
            except _Stop:
                self._stopped = self._stop if self._stopped != INTERRUPT else INTERRUPT
                log.info("%s: batch %d of %d dropped", self._stop, b + 1, req.batch_count)
        return images, kept
