"""The errors a person running the project can fix: one line each, naming the key or file and the
way out.
"""

from __future__ import annotations


class UserError(Exception):
    """Something the person running the stage can fix: stages print it as one line, exit 2."""


class ConfigError(UserError, ValueError):
    """A configuration value that cannot work; the message names the key and what is accepted."""


class InputError(UserError, ValueError):
    """An input file that cannot be used; the message names the file, the line and the reason."""
