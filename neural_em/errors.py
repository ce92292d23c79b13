"""Exceptions raised by neural-em.

Every error caused by the user's input (a file, an argument) is an :class:`InputError`, a
``ValueError`` subclass, so the command line can turn it into exit code 2 and one clear line.
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input: a file that cannot be used or an argument outside its valid range.

    ``path`` names the offending file when there is one; ``str(error)`` is the one-line message.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class MapFormatError(InputError):
    """A voxel map that cannot be read or is not a valid cryo-EM map."""


class FieldFormatError(InputError):
    """A ``.neural`` field file that is not valid (corrupt, truncated, wrong format, pickle)."""


class SizeLimitError(InputError):
    """An input larger than a configured limit; the message names the option that raises it."""
