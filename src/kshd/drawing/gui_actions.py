"""What the studio's buttons do: draw (with progress, as one job of the queue), stop, and move
pictures and parameters between the tabs. Errors a user can fix come back as messages naming the
field by its label and are logged as one line; anything else keeps its traceback."""

from __future__ import annotations

import html
import inspect
import logging
import time
import typing
from collections.abc import Callable, Sequence
from dataclasses import asdict
from types import MethodType
from typing import Any

import gradio as gr

from kshd.config.errors import UserError
from kshd.drawing.engine import INTERRUPT, SKIP, Engine, EngineSettings, Generated
from kshd.drawing.gui_live import live_job
from kshd.drawing.gui_modes import TabPart, tab_parts
from kshd.drawing.gui_queue import take_out
from kshd.drawing.gui_roots import NotConfigured, Roots
from kshd.drawing.request import Request, RequestError
from kshd.models.family import is_single_file, model_family, read_checkpoint
from kshd.prompts.encoding import join_prefix

log = logging.getLogger(__name__)
CANNOT = "Cannot draw this"
MAX_FAILURES = 64  # job errors kept for the tabs' status lines


def job_error(exc: Exception) -> gr.Error:
    """Any error of a job as one message: the user's to fix (a request, a setting, a file) in
    its own words and one log line; anything else by its type and first line, its traceback
    logged."""
    if isinstance(exc, gr.Error):
        return exc
    if isinstance(exc, RequestError | UserError):
        log.info("refused: %s", exc)
        return user_error(str(exc))
    log.error("drawing failed", exc_info=exc)
    first = next(iter(str(exc).splitlines()), "")
    return user_error(f"{type(exc).__name__}: {first}", title="Drawing failed")


def user_error(message: str, title: str = CANNOT) -> gr.Error:
    """A mistake the user can fix: shown until closed, logged by the caller as one line (Gradio
    would print a traceback for it)."""
    return gr.Error(message, title=title, duration=None, print_exception=False)


def gradio_signature(params: Sequence[tuple[str, Any]], method: bool = False) -> inspect.Signature:
    """`params` (name, resolved type) in order, then Gradio's progress and request, as an
    explicit signature (Gradio passes a tab's inputs by position and names the API's parameters
    from it; the request, by its annotation, is not an API input); `self` first for a method."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    return inspect.Signature(
        [inspect.Parameter("self", kind)] * method
        + [inspect.Parameter(n, kind, annotation=t) for n, t in params]
        + [inspect.Parameter("progress", kind, default=gr.Progress())]
        + [inspect.Parameter("request", kind, default=None, annotation=gr.Request)]
    )


def signed(handler: Callable[..., Any], signature: inspect.Signature) -> Callable[..., Any]:
    """`handler` as Gradio reads it: `signature`, and its hints in __annotations__ (where Gradio
    finds the request parameter)."""
    handler.__signature__ = signature
    handler.__annotations__ = {
        p.name: p.annotation for p in signature.parameters.values() if p.annotation is not p.empty
    }
    return handler


def request_handler(part: TabPart, draw: Callable[..., Any]) -> Callable[..., Any]:
    """A method taking `self`, the tab's Request fields in order, Gradio's progress and request
    (`gradio_signature`); `draw(self, values, progress, request, make)` gets the fields by name
    and the class of its mode's requests."""
    # resolved types: one left a string that this module cannot resolve ('Image.Image') makes
    # Gradio's reading of all the hints fail, and the request would arrive as None
    hints = typing.get_type_hints(part.mode.request)
    signature = gradio_signature([(n, hints[n]) for n in part.fields], method=True)

    def handler(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        values = dict(bound.arguments)
        self, progress, request = values.pop("self"), values.pop("progress"), values.pop("request")
        return draw(self, values, progress, request, part.mode.request)

    if inspect.isgeneratorfunction(draw):  # Gradio streams a generator function's yields

        def streaming(*args, **kwargs):
            yield from plain(*args, **kwargs)

        plain, handler = handler, streaming
    return signed(handler, signature)


def session(request: gr.Request | None) -> str | None:
    """The browser tab (or API client) a job belongs to: Interrupt stops only its own."""
    return getattr(request, "session_hash", None) if request is not None else None


def single_file_settings(s: EngineSettings) -> EngineSettings:
    """A single-file base chosen in the app draws as its markers say (`v_pred`, `ztsnr`; the
    app has no config to say it), read with the configured configs when of its family."""
    from dataclasses import replace

    info = read_checkpoint(s.pretrained, "Base model")
    config = s.single_file_config
    if config and model_family(config) != info.family:
        config = None  # diffusers' own for the file's family
    return replace(s, single_file_config=config, zero_terminal_snr=info.ztsnr,
                   prediction_type="v_prediction" if info.v_pred else None)  # fmt: skip


class Handlers:
    """The callbacks: build a Request, run the engine with progress, turn errors into messages."""

    def __init__(
        self,
        engine: Engine,
        checkpoint_strength: float | None = None,
        describe: Callable[[Engine], str] = lambda e: "",
    ):
        self.engine, self.checkpoint_strength, self.describe = engine, checkpoint_strength, describe
        self.configured = engine.settings  # model.* of the config belong to its own base
        self._failures: dict[str | None, str] = {}  # a session's last job error, for its status
        self._notes: dict[str | None, list[str]] = {}  # its last job's notes, likewise
        self.queue = None  # the server's queue (Gradio's), set once it is made: for Interrupt
        self.roots: Roots | None = None  # off loopback: what the model bar may load

    def _misfit(self, engine: Engine, lora: str) -> str | None:
        """Why `lora` does not load into the new base (e.g. made for the other family), or
        None once it is loaded."""
        try:
            engine.set_lora(lora, self.checkpoint_strength)
        except (OSError, ValueError) as exc:
            log.info("LoRA %s left out on base %s: %s", lora, engine.settings.pretrained, exc)
            return html.escape(str(exc).splitlines()[0])
        return None

    def _base_settings(self, base: str):
        """Engine settings for `base`: the configured model's own schedule (model.prediction_type,
        zero_terminal_snr) stays with it; another base draws on its scheduler config's."""
        from dataclasses import replace

        if base == self.configured.pretrained:
            return replace(self.configured, lora=None)
        plain = replace(self.configured, pretrained=base, revision=None, variant=None, lora=None,
                        prediction_type=None, zero_terminal_snr=False)  # fmt: skip
        return single_file_settings(plain) if is_single_file(base) else plain

    def set_model(self, base: str, lora: str, request: gr.Request = None) -> str:
        """Switch the base model and / or the LoRA, reloading only what changed; says what is
        in use. A model that cannot load leaves the one in use; a LoRA that does not fit a new
        base (one of the other family) is left out and said so, the new base kept."""
        engine, lora = self.engine, lora or None
        self._check_roots(base, lora)
        try:
            if base != engine.settings.pretrained:
                with engine.lock:  # the job in progress finishes first
                    fresh = Engine(self._base_settings(base))
                self.engine = engine = fresh
                if lora and (why := self._misfit(engine, lora)):
                    return self.describe(engine) + f" · LoRA left out: {why}"
            if lora != engine.lora_path:
                engine.set_lora(lora, self.checkpoint_strength)
        except (UserError, OSError, ValueError) as exc:
            said = f"Base model: {exc}"
            if base == engine.settings.pretrained:  # the base loaded: it was the LoRA
                said = (f"LoRA: {exc}; pick one of the list (Refresh reads the folders again); "
                        f"in use: {engine.lora_name or 'none'}")  # fmt: skip
            log.info("refused: %s", said)
            raise user_error(said, title="Cannot switch") from exc
        log.info("in use: base %s, LoRA %s", base, lora)
        return self.describe(engine)

    def _check_roots(self, base: str, lora: str | None) -> None:
        """Off loopback, a base or LoRA outside the configured ones is refused (`gui_roots`),
        in one message whether it exists or not."""
        if self.roots is None:
            return
        engine = self.engine
        try:
            if base != engine.settings.pretrained:
                label = "Base model"
                self.roots.check_base(base)
            if lora and lora != engine.lora_path:
                label = "LoRA"
                self.roots.check_lora(lora)
        except NotConfigured as exc:
            log.info("refused: %s: %s", label, exc)
            raise user_error(f"{label}: {exc}", title="Cannot switch") from exc

    def _run(self, values: dict, progress: gr.Progress, request: gr.Request | None = None,
             make: type[Request] = Request):  # fmt: skip
        """`values`: the Request fields by name, as the tab's inputs gave them; `make`: the
        class of the tab's requests (its mode's). Any error ends the job as one message, kept
        for the tab's status (`failed`)."""
        try:
            return self._job(values, progress, request, make)
        except Exception as exc:
            raise self.fail(exc, request) from exc

    def fail(self, exc: Exception, request: gr.Request | None) -> gr.Error:
        """A job's error as the one message to raise, kept for the tab's status (`failed`):
        the page says it beside Generate (a toast would cover the button); a script gets it as
        the call's error."""
        error = job_error(exc)
        self._failures.pop(session(request), None)  # the newest last: the oldest go first
        self._failures[session(request)] = error.message
        while len(self._failures) > MAX_FAILURES:  # API clients never read theirs
            del self._failures[next(iter(self._failures))]
        return gr.Error(error.message, title=error.title, duration=None, visible=False,
                        print_exception=False)  # fmt: skip

    def _said(self, notes: list[str], request: gr.Request | None) -> None:
        """A job's notes (e.g. a <lora:name> found nowhere: drawn without it), kept for the
        status line beside Generate (`idle`), where they are said once."""
        self._notes.pop(session(request), None)
        if notes:
            self._notes[session(request)] = notes
            while len(self._notes) > MAX_FAILURES:  # API clients never read theirs
                del self._notes[next(iter(self._notes))]

    def idle(self, started: float | None, drawn: list[dict], request: gr.Request) -> tuple:
        """After the job: Generate back, what was drawn in how long, and the job's notes."""
        *buttons, status = idle(started, drawn)
        notes = self._notes.pop(session(request), [])
        return (*buttons, " · ".join(filter(None, [status, *map(html.escape, notes)])))

    def failed(self, request: gr.Request) -> tuple:
        """After a job's error: Generate back, the error in one line beside it."""
        said = self._failures.pop(session(request), "the drawing failed")
        return (*idle_buttons(), f'<span class="status-error">{html.escape(said)}</span>')

    def _live(self, values: dict, progress: gr.Progress, request: gr.Request | None = None,
              make: type[Request] = Request):  # fmt: skip
        """The page's `_run`: each batch shown as it ends, a live preview and the ETA while
        drawing (`gui_live`); the same outputs last."""
        try:
            req = self._request(values, make, progress)
            yield from live_job(self.engine, req, progress, session(request),
                                lambda result: outputs(req, values, result),
                                lambda notes: self._said(notes, request))  # fmt: skip
        except Exception as exc:
            raise self.fail(exc, request) from exc

    def _job(self, values: dict, progress: gr.Progress, request: gr.Request | None,
             make: type[Request]):  # fmt: skip
        req = self._request(values, make, progress)
        result = self.engine.generate(
            req,
            lambda done, total: progress((done, total), desc="drawing", unit="steps"),
            owner=session(request),
        )
        self._said(result.notes, request)
        return outputs(req, values, result)

    def _request(self, values: dict, make: type[Request], progress: gr.Progress) -> Request:
        """The tab's Request from its inputs (`values` by field name; a missing picture or
        sketch refused, naming its field), its job said to wait for the model."""
        if isinstance(values.get("image"), dict):  # inpainting: the picture and its strokes
            brushed = values.pop("image")
            values["image"], values["mask"] = brushed.get("image"), brushed.get("mask")
            if values["image"] is not None and values["mask"] is None:
                log.info("refused: nothing brushed")
                raise user_error("Picture: brush the part to redraw")
        if "image" in values and not values["image"]:
            log.info("refused: no picture to redraw")
            raise user_error("Picture: upload a picture to redraw")
        if "control_image" in values and not values["control_image"]:
            log.info("refused: no sketch")
            raise user_error("Sketch: upload or draw a sketch")
        req = make(**values)
        progress((0, req.steps), desc="waiting for the model", unit="steps")
        return req

    # the built-in tabs' handlers by name (a script's or a test's; the studio wires `drawer`)
    txt2img = request_handler(tab_parts()["txt2img"], _run)
    img2img = request_handler(tab_parts()["img2img"], _run)
    sketch = request_handler(tab_parts()["sketch"], _run)
    inpaint = request_handler(tab_parts()["inpaint"], _run)

    def drawer(self, tab: str) -> Callable[..., Any]:
        """The drawing handler of the registered tab `tab` (`gui_modes`), bound to this."""
        return MethodType(request_handler(tab_parts()[tab], type(self)._run), self)

    def live_drawer(self, tab: str) -> Callable[..., Any]:
        """The page's drawing handler of the tab `tab`: `drawer`'s, streamed as it draws."""
        return MethodType(request_handler(tab_parts()[tab], type(self)._live), self)

    def interrupter(self, tab: str) -> Callable[..., Any]:
        """Interrupt for the tab `tab`: its page's job in progress stopped at its next step
        (the images it finished kept), or the tab's job still waiting in the queue taken out
        of it (its page told as of an error)."""

        async def interrupt(request: gr.Request) -> str:
            if self.engine.stop(INTERRUPT, owner=session(request)):
                return f"{INTERRUPT}: asked"
            said = "interrupted before it started: taken out of the queue"
            if self.queue is not None and await take_out(self.queue, session(request), tab, said):
                self._failures[session(request)] = said
                log.info("%s job of %s %s", tab, session(request), said)
                return f"{INTERRUPT}: {said}"
            return f"{INTERRUPT}: nothing of yours is drawing"

        return interrupt

    def skip(self, request: gr.Request) -> str:
        """Drop the batch this page's job is drawing and go on with the next."""
        return self._stop(SKIP, request)

    def _stop(self, how: str, request: gr.Request | None) -> str:
        done = self.engine.stop(how, owner=session(request))
        return f"{how}: asked" if done else f"{how}: nothing of yours is drawing"


def outputs(req: Request, values: dict, result: Generated) -> tuple:
    """A tab's outputs of what is drawn: gallery, parameters, PNG files, the requests."""
    gallery = [(str(p), f"seed {s}") for p, s in zip(result.paths, result.seeds, strict=True)]
    drawn = [asdict(req) | {"seed": s, "image": values.get("image")} for s in result.seeds]
    return gallery, "\n\n".join(result.infotexts), [str(p) for p in result.paths], drawn


def busy() -> tuple:
    """While a job of this page runs: Generate off, Interrupt and Skip on."""
    started = time.monotonic()
    return (
        gr.Button(interactive=False, value="Generating…"),
        gr.Button(interactive=True),
        gr.Button(interactive=True),
        started,
    )


def idle(started: float | None, drawn: list[dict]) -> tuple:
    """After the job (or its error): Generate back, and what was drawn in how long."""
    took = time.monotonic() - started if started else 0.0
    n = len(drawn or [])
    said = f"{n} image{'s' * (n != 1)} in {took:.1f} s" if n else ""
    return (*idle_buttons(), said)


def idle_buttons() -> tuple:
    """Generate back; Interrupt and Skip off."""
    return gr.Button(interactive=True, value="Generate"), gr.Button(interactive=False), \
        gr.Button(interactive=False)  # fmt: skip


def effective_prompts(prefix: str, prompt: str, negative_prefix: str, negative: str) -> str:
    """What the model is given, the prefixes included: one line (the prefixes' word counts) that
    opens to both prompts in full."""
    counts = f"prefixes: {len(prefix.split())} and {len(negative_prefix.split())} words"
    full, neg = join_prefix(prefix, prompt), join_prefix(negative_prefix, negative)
    return (
        f"<details><summary>Prompts as drawn ({counts})</summary>\n\n"
        f"**Prompt:** {html.escape(full) or '(empty)'}\n\n"
        f"**Negative:** {html.escape(neg) or '(empty)'}\n\n</details>"
    )


def _pick(drawn: list[dict], selected: int | None) -> dict:
    if not drawn:
        raise user_error("no image yet: generate one first", title="Nothing to send")
    index = selected or 0
    return drawn[index] if 0 <= index < len(drawn) else drawn[0]


def reuse_seed(drawn: list[dict], selected: int | None) -> int:
    """♻: the seed of the selected image (the first when none is selected)."""
    return _pick(drawn, selected)["seed"]


def sender(names: tuple[str, ...], picture: bool, target: str) -> Callable[..., tuple]:
    """A send button's function: the selected image (when the target takes a picture) and every
    parameter it was drawn with, into the target tab's fields `names`, and that tab shown."""

    def send(drawn: list[dict], selected: int | None, gallery) -> tuple:
        chosen = _pick(drawn, selected)
        values = [chosen[n] for n in names if n not in ("image", "strength", "resize_mode")]
        if not picture:
            return (*values, gr.Tabs(selected=target))
        path = _gallery_path(gallery, selected)
        kept = ("strength", "resize_mode")  # a loopback keeps them; from text-to-image, the tab's
        keep = [chosen[n] if chosen.get("image") else gr.skip() for n in kept]
        return (path, *keep, *values, gr.Tabs(selected=target))

    return send


def _gallery_path(gallery, selected: int | None) -> str:
    index = selected or 0
    item = gallery[index] if gallery and 0 <= index < len(gallery) else gallery[0]
    path = item[0] if isinstance(item, list | tuple) else item
    return getattr(path, "path", path)


def swap(width: int, height: int) -> tuple[int, int]:
    return height, width
