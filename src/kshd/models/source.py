"""Where a model named in config comes from: a local folder, the local Hub cache, or the Hub.

Checked before any work, so that a model that cannot be had is one line naming the config key
and the ways out, not a long traceback from deep inside diffusers' or transformers' download.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from kshd.config.errors import UserError

log = logging.getLogger(__name__)

WAYS_OUT = (
    "Ways out: a local folder with the model (save_pretrained layout), network access to the "
    "Hub (unset HF_HUB_OFFLINE), or +experiment=demo for the tiny offline models."
)
PROBE_TIMEOUT_S = 10.0
# single-file checkpoints (kshd.models.single_file reads the .safetensors; the others are refused)
CHECKPOINT_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


class ModelSourceError(UserError, FileNotFoundError):
    """A model that is neither a folder here, nor cached, nor reachable: named by its key."""


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now, or as huggingface_hub read it."""
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return constants.is_offline_mode() or any(
        (f or "").upper() in {"1", "ON", "YES", "TRUE"} for f in flags
    )


def _looks_local(name: str) -> bool:
    return name.startswith((".", "/", "~")) or Path(name).parts[:1] in (("models",), ("data",))


def in_hub_cache(repo_id: str, marker: str, revision: str | None = None) -> bool:
    """Whether the Hub cache holds `marker` (e.g. model_index.json) of that repo and revision."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, marker, revision=revision)
    except ValueError:  # not a valid repo id at all
        return False
    return isinstance(found, str)


def _hub_problem(repo_id: str, revision: str | None) -> str | None:
    """Why the Hub cannot give this model now (unreachable, no such repo), or None."""
    import httpx2
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import (
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        HfApi().model_info(repo_id, revision=revision, timeout=PROBE_TIMEOUT_S)
    except RevisionNotFoundError:
        return f"the Hub has no revision {revision!r} of it (see `model.revision`)"
    except RepositoryNotFoundError:
        return f"{constants.ENDPOINT} has no such model (or it is private: `hf auth login`)"
    except HfHubHTTPError:
        return None  # reachable; the loader reports what the Hub says
    except (httpx2.HTTPError, OSError) as err:
        return f"the Hub ({constants.ENDPOINT}) cannot be reached ({type(err).__name__})"
    return None


def check_model_source(
    name: str, key: str, marker: str = "config.json", revision: str | None = None
) -> None:
    """Fail before loading anything when `name` is no usable folder, not cached and not reachable.

    `marker` is the file every copy of such a model has (`model_index.json` for a diffusers
    pipeline, `config.json` for a transformers model).
    """
    path = Path(name).expanduser()
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        if marker != "model_index.json":  # only a whole SD pipeline comes as one file
            raise ModelSourceError(f"config key `{key}` = {name!r}: give a folder or Hub id, "
                                   "not a single file.")  # fmt: skip
        if not path.is_file():
            raise ModelSourceError(
                f"config key `{key}` = {name!r}: no such file. Give an existing .safetensors "
                "checkpoint, a local folder or a Hugging Face id."
            )
        return  # read and checked by kshd.models.single_file when loaded
    if path.is_dir():
        if not (path / marker).is_file():
            raise ModelSourceError(
                f"config key `{key}` = {name!r}: the folder has no {marker}, so it is no saved "
                "model; give the folder that save_pretrained wrote."
            )
        return
    if _looks_local(name) or path.exists():
        raise ModelSourceError(
            f"config key `{key}` = {name!r}: no such folder. Give a Hugging Face id "
            "(e.g. stablediffusionapi/anything-v5) or an existing local folder."
        )
    if in_hub_cache(name, marker, revision):
        return
    if hub_offline():
        why = "HF_HUB_OFFLINE is set"
    elif (why := _hub_problem(name, revision)) is None:
        return
    raise ModelSourceError(
        f"config key `{key}` = {name!r} is not a local folder nor in the local Hugging Face "
        f"cache, and {why}. {WAYS_OUT}"
    )
