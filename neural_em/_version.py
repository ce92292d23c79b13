"""The package's version, read from its installed metadata (pyproject.toml holds it)."""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("neural-em")
except metadata.PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
    __version__ = "0+unknown"
