"""The drawing engine behind `kshd gui`, `kshd generate` and `kshd img2img`.

The base model and the LoRA are loaded once; every drawing mode (`kshd.drawing.modes`: text to
image, image to image, sketch, inpaint) draws with the same weights (`from_pipe`), in the same
batches, seeds, Interrupt and Skip, and is saved the same way. The LoRA is fused into the UNet,
and into the text encoder when it has a text-encoder part, at the requested strength and stays
fused while the strength does not change (as fast as the base model); a new strength restores
the saved base weights exactly and fuses again, so strength 0 is the base model bit for bit.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from kshd import __version__
from kshd.config.schema_generate import GenerateSettings, PreviewSettings
from kshd.config.schema_model import ModelSettings
from kshd.drawing.catalog import LoraCatalog
from kshd.drawing.lora_switching import LoraSwitching
from kshd.drawing.modes.base import Mode
from kshd.drawing.modes.registry import mode_of, modes, validate
from kshd.drawing.pace import MEGA, Pace, work
from kshd.drawing.pnginfo import format_parameters, save_png
from kshd.drawing.preview import Preview, previewer
from kshd.drawing.prompt_loras import LoraPlan, split_tags, unknown_note
from kshd.drawing.request import (
    FROM_CONF,
    SAMPLERS,
    Limits,
    Request,
    conf_value,
    fill_from_conf,
    first_seed,
)
from kshd.models.family import SD1, SDXL, is_single_file
from kshd.models.identity import a1111_hash, model_identity
from kshd.models.loading import device_and_dtype, load_sd_pipeline
from kshd.models.source import check_model_source
from kshd.prompts.sdxl import clip_skip_note, pipe_embeds, prompt_encoder

log = logging.getLogger(__name__)
Progress = Callable[[int, int], None]  # (steps done, steps in the request)
Finished = Callable[["Generated"], None]  # the images finished so far, as each batch ends


# EngineSettings field <- generate key, where the names differ
ENGINE_KEYS = {"control_models": "control.models", "inpaint_model": "inpaint.model",
               "trained_lora": "lora", "checkpoints_dir": "gui.checkpoints_dir",
               "lora_dirs": "gui.lora_dirs"}  # fmt: skip


@dataclass(frozen=True)
class EngineSettings:
    """What the engine loads and where it saves. A `generate` field left out (device to limits)
    takes the project's value (params.yaml, else conf/), so `EngineSettings("model")` works
    without the defaults in code; `from_settings` fills every field from a loaded config."""

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
    # where `<lora:name:w>` in a prompt finds its LoRA (the studio's chooser's list): the trained
    # LoRA (generate.lora), the checkpoints, the LoRA folders
    trained_lora: str | None = FROM_CONF
    checkpoints_dir: str | None = FROM_CONF
    lora_dirs: tuple[str, ...] = FROM_CONF
    # the run's train.alpha / train.rank: the strength of a checkpoint that records none (a
    # prompt's <lora:checkpoint-N>); None: such a checkpoint is refused
    checkpoint_strength: float | None = None
    # the model's own schedule (model.prediction_type / zero_terminal_snr; None, False: as its
    # scheduler config says), and rescaled CFG for a zero-terminal-SNR base
    prediction_type: str | None = None
    zero_terminal_snr: bool = False
    guidance_rescale: float = FROM_CONF
    # model.clip_skip: the text encoder's layer prompts are encoded from (1: the last; 2: the
    # penultimate, A1111's Clip skip 2), unless a request asks for another; SD 1.x only
    clip_skip: int = 1
    preview: PreviewSettings = FROM_CONF  # the live preview while drawing (drawing.preview)

    def __post_init__(self) -> None:
        fill_from_conf(self, ENGINE_KEYS)

    @classmethod
    def from_settings(
        cls, model: ModelSettings, generate: GenerateSettings, lora: str | None = None
    ) -> EngineSettings:
        """The `model` group's fields of the same names, the `generate` group's for the rest;
        `lora` (the command line's) must exist, `generate.lora` may be missing: the base alone."""
        chosen = lora if lora is not None else generate.lora
        if chosen and lora is None and not Path(chosen).exists():
            log.warning(
                "no LoRA at %s (generate.lora): drawing with the base model alone. Train one "
                "with `dvc repro` (or `make demo`), or name one with --lora.",
                chosen,
            )
            chosen = None
        embeddings = tuple((str(k), str(v)) for k, v in (generate.embeddings or {}).items())
        own = {"lora": chosen or None, "embeddings": embeddings, "checkpoint_strength": None}
        names = [f.name for f in fields(cls) if f.name not in own]
        values = {n: getattr(model, n) for n in names if hasattr(model, n)}
        values |= {n: conf_value(generate, n, ENGINE_KEYS) for n in names if n not in values}
        return cls(**values, **own)


@dataclass
class Generated:
    images: list[Image.Image]
    seeds: list[int]
    infotexts: list[str]
    paths: list[Path]
    stopped: str | None = None  # "interrupt" or "skip" when the user stopped part of it
    notes: list[str] = field(default_factory=list)  # said once for the job (a LoRA not found)


class _Stop(Exception):
    """Raised from the step callback: the batch in progress is dropped without a VAE decode."""


INTERRUPT, SKIP = "interrupt", "skip"


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
        check_model_source(
            settings.pretrained, "model.pretrained", "model_index.json", settings.revision
        )
        self.settings = settings
        self.limits = settings.limits
        self.notes: list[str] = []  # said once to the user (log, GUI)
        self._modes: dict[str, Mode] = {}  # this engine's object of each mode, made when used
        self.device, self.dtype = _device(settings.device)
        pipe = load_sd_pipeline(
            settings.pretrained, settings.revision, settings.variant, self.device, self.dtype,
            settings.prediction_type, settings.zero_terminal_snr, settings.single_file_config,
        )  # fmt: skip
        self.family = SDXL if getattr(pipe, "text_encoder_2", None) is not None else SD1
        if settings.attention_slicing:
            pipe.enable_attention_slicing()
        if settings.vae_tiling:
            pipe.vae.enable_tiling()
        self.txt2img = pipe  # the base model's pipeline; every mode's shares its weights
        self._base_scheduler = pipe.scheduler.config
        self.model_name, self.model_hash = _model_name_and_hash(settings)
        self.lora_name = self.lora_hash = self.lora_path = None
        self._extras, self._hashes = {}, {}  # the prompt's LoRAs attached; A1111 hashes by path
        self.catalog = LoraCatalog(settings.trained_lora, settings.checkpoints_dir, None,
                                   tuple(settings.lora_dirs))  # fmt: skip
        if settings.lora:
            self._load_lora(settings.lora)
        self.encoder = prompt_encoder(pipe, self._embeddings(), settings.clip_skip)
        if note := clip_skip_note(self.family == SDXL, settings.clip_skip):
            self._note(note)
        self._scales: dict[str, float] | None = None  # strengths merged (None: none)
        self._originals: dict[str, torch.Tensor] = {}
        self.lock = threading.Lock()
        self._owner: str | None = None  # who the job in progress belongs to (a GUI session)
        self._stop: str | None = None  # INTERRUPT or SKIP, asked for the job in progress
        self._stopped: str | None = None  # what stopped a batch of the job in progress
        self.pace = Pace()  # seconds per step-image-megapixel, for the queue's estimate
        self.previewer = previewer(settings.preview, pipe.vae, self.family, self._note)
        self._keep: Callable[[list[Image.Image], list[int]], None] = lambda images, seeds: None
        self._preview: Preview | None = None  # the job in progress's preview callback

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
        for mode in list(self._modes.values()):
            mode.forget()  # e.g. an inpainting UNet of its own holding the old LoRA

    def mode(self, name: str) -> Mode:
        """This engine's object of the registered mode `name` (what it loaded: its pipelines)."""
        if name not in self._modes:  # made once (setdefault: also by two threads at once)
            self._modes.setdefault(name, modes()[name](self))
        return self._modes[name]

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

    def clip_skip(self, req: Request) -> int:
        """The clip skip `req` is drawn at: its own, else the base's (`model.clip_skip`); an
        SDXL base is always drawn at its penultimate layers (a request's 2 is said once)."""
        if req.clip_skip is None:
            return self.settings.clip_skip
        note = clip_skip_note(self.family == SDXL, req.clip_skip, "Clip skip")
        if note and note not in self.notes:
            self._note(note)
        return req.clip_skip

    def infotext(
        self, req: Request, seed: int, given: Any = None, loras: LoraPlan | None = None
    ) -> str:
        """A1111's `parameters` of one image; its mode's keys (`Mode.params`) after the model's,
        `given` being what the mode read (None: what the request alone says); `loras`: what its
        `<lora:...>` tags named (None: looked up again)."""
        prompt, hashes = self._drawn_loras(req, loras or self.lora_plan(req))
        skip = self.clip_skip(req) if self.family == SD1 else 1  # SDXL: never drawn at another
        params = {
            "Steps": req.steps,
            "Sampler": SAMPLERS[req.sampler][0],
            "CFG scale": f"{req.cfg_scale:g}",
            "Seed": seed,
            "Size": f"{req.width}x{req.height}",
            "Model hash": self.model_hash,
            "Model": self.model_name,
            "Model family": self.family,
            "Clip skip": skip if skip != 1 else None,  # as A1111 writes it: only when not 1
            **mode_of(req).params(req, given),
            "Lora hashes": ", ".join(hashes) or None,
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
        preview: Preview | None = None,
        finished: Finished | None = None,
    ) -> Generated:
        """Draw `req.batch_count` batches of `req.batch_size`; save each PNG with its parameters.

        PNGs go to `folder`, or by default to `<outputs_dir>/<its mode's name>/<date>/`, each
        batch as it ends (`finished` hears of it). `owner` names the job for `stop`; a stopped
        job returns the batches it finished. `preview` gets a picture of the batch in progress
        every `generate.preview.every` steps.
        """
        req = validate(req, self.limits)
        loras = self.lora_plan(req)
        notes = [unknown_note(loras.unknown, self.catalog)] if loras.unknown else []
        mode = self.mode(mode_of(req).name)
        given = mode.inputs(req)
        start = first_seed(req.seed)
        seeds = [(start + i) % (2**32) for i in range(req.count)]
        folder = folder or Path(self.settings.outputs_dir) / mode.name / date.today().isoformat()
        out = Generated([], [], [], [])

        def keep(images: list[Image.Image], batch: list[int]) -> None:
            images = mode.finish(images, given)
            texts = [self.infotext(req, s, given, loras) for s in batch]
            if save:
                items = zip(images, texts, batch, strict=True)
                out.paths += [save_png(im, text, folder, seed) for im, text, seed in items]
            out.images += images
            out.seeds += batch
            out.infotexts += texts
            if finished is not None:
                finished(out)

        with self.lock:
            self._owner, self._stop, self._stopped = owner, None, None
            self._keep, self._preview = keep, preview
            self.pace.start(work(req.steps, req.count, req.width, req.height, mode.share(req)))
            try:
                out.notes = notes = notes + self._use_loras(req, loras)
                self._draw(mode, req, given, seeds, progress or (lambda d, t: None))
            finally:
                stopped, self._owner, self._stop = self._stopped, None, None
                self._preview = None
                self.pace.finish()
        for note in notes:
            log.warning("%s", note)
        out.stopped = stopped
        return out

    def _draw(
        self, mode: Mode, req: Request, given: Any, seeds: list[int], progress: Progress
    ) -> None:
        """Each batch drawn handed to `self._keep`; a batch stopped by `stop` is left out."""
        unchanged = mode.unchanged(req, given)
        if unchanged is not None:
            progress(1, 1)  # e.g. strength 0: no denoising step, the picture comes back as it is
            return self._keep([unchanged.copy() for _ in seeds], seeds)
        pipe, call = mode.pipeline(req, given)
        pipe.scheduler = self._scheduler(req.sampler)
        prompt = split_tags(req.full_prompt)[0]  # the tags load LoRAs, the encoder never reads them
        pos, neg = self.encoder.encode_pair(prompt, req.full_negative, self.clip_skip(req))
        call |= {"num_inference_steps": req.steps, "guidance_scale": req.cfg_scale}
        if self.settings.zero_terminal_snr and self.settings.guidance_rescale:
            call["guidance_rescale"] = self.settings.guidance_rescale
        with mode.drawing(req, pipe):
            self._batches(req, pipe, call, (pos, neg), seeds, progress)

    def _batches(self, req: Request, pipe, call: dict, embeds, seeds: list[int], progress):
        """Draw the request's batches with `pipe(**call)`; Interrupt and Skip end them."""
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
                self._show(kwargs, req, i + 1, per_batch)
                return kwargs

            try:
                drawn = pipe(
                    **pipe_embeds(*embeds, len(batch)),
                    generator=[torch.Generator("cpu").manual_seed(s) for s in batch],
                    callback_on_step_end=step_end,
                    **call,
                ).images
            except _Stop:
                self._stopped = self._stop if self._stopped != INTERRUPT else INTERRUPT
                log.info("%s: batch %d of %d dropped", self._stop, b + 1, req.batch_count)
            else:
                self._keep(drawn, batch)

    def _show(self, kwargs: dict, req: Request, done: int, steps: int) -> None:
        """Every `generate.preview.every` steps of a batch: its picture so far, to the job's
        preview callback (nothing computed without one)."""
        if self._preview is None or self.previewer is None or not self.previewer.due(done):
            return
        self._preview(self.previewer(kwargs["latents"], (req.width, req.height)), done, steps)
