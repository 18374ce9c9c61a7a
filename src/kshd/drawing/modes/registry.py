"""Which mode a request is: the registered modes, asked from the last registered to the first,
so a mode added later (more specific than the ones it builds on) is asked before them. The
built-in modes are registered here from the most general, text to image first: it takes every
request no other mode claims."""

from __future__ import annotations

from typing import TypeVar

from kshd.config.schema_generate import Limits
from kshd.drawing.modes.base import Mode
from kshd.drawing.modes.img2img import ImageToImage
from kshd.drawing.modes.inpaint import Inpaint
from kshd.drawing.modes.sketch import Sketch
from kshd.drawing.modes.txt2img import TextToImage
from kshd.drawing.request import Request, validate_shared

ModeT = TypeVar("ModeT", bound=Mode)
_MODES: list[type[Mode]] = []  # in the order registered


def register_mode(cls: type[ModeT]) -> type[ModeT]:
    """Registers a `Mode` subclass (a class decorator), asked before every mode registered
    earlier."""
    if not (isinstance(cls, type) and issubclass(cls, Mode)):
        raise TypeError(f"{cls!r} is not a Mode subclass")
    if cls.name in modes():
        raise ValueError(f"a drawing mode named {cls.name!r} is registered already")
    _MODES.append(cls)
    return cls


def modes() -> dict[str, type[Mode]]:
    """The registered modes by name, in the order registered."""
    return {m.name: m for m in _MODES}


def mode_of(req: Request) -> type[Mode]:
    """The mode a request is: the last registered that claims it."""
    return next(m for m in reversed(_MODES) if m.claims(req))


def validate(req: Request, limits: Limits) -> Request:
    """Check and normalise every field, the shared ones then its mode's; raise RequestError
    for the first bad one."""
    validate_shared(req, limits)
    mode_of(req).check(req, limits)
    return req


for _built_in in (TextToImage, ImageToImage, Inpaint, Sketch):
    register_mode(_built_in)
