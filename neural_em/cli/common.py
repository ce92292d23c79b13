"""Helpers shared by the sub-commands: parser construction, output checks, progress."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults and keeps the examples' line breaks."""


def add_command(sub: Any, name: str, help_text: str, example: str) -> argparse.ArgumentParser:
    """Add a sub-command whose help shows defaults and an example."""
    return sub.add_parser(
        name,
        help=help_text,
        description=f"{help_text}\n\nexample:\n  {example}",
        formatter_class=HelpFormatter,
    )


def add_max_voxels(parser: argparse.ArgumentParser) -> None:
    """Add ``--max-voxels`` (the size limit of maps and grids) to ``parser``."""
    parser.add_argument(
        "--max-voxels",
        type=positive_int,
        default=None,
        help="refuse maps and grids larger than this many voxels "
        "(default: NEURAL_EM_MAX_VOXELS or 268435456)",
    )


def json_text(obj: Any) -> str:
    """The CLI's JSON: indented, keys sorted, one trailing newline."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


def print_json(obj: Any) -> None:
    """Print :func:`json_text` of ``obj`` to stdout."""
    sys.stdout.write(json_text(obj))


def positive_float(text: str) -> float:
    """argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer > 0 (``1e6`` accepted)."""
    try:
        value = int(text)
    except ValueError:
        try:  # also 1e6
            number = float(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from exc
        if not number.is_integer():
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        value = int(number)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive integer")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from exc
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite number >= 0")
    return value
