"""Entry point of ``neural-em``: builds the sub-command parsers and maps errors to exit codes.

Exit codes: 0 success, 2 bad input (one line on stderr, no traceback unless ``--debug``),
1 anything else.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from neural_em._version import __version__
from neural_em.cli.common import HelpFormatter
from neural_em.errors import InputError

#: Sub-command modules under ``neural_em.cli``, in help order; each defines
#: ``register(subparsers)``, which sets ``func`` (args -> exit code) on its parser.
COMMANDS = ("info", "fit", "resample", "query", "convert", "graph", "evaluate", "view")


def build_parser() -> argparse.ArgumentParser:
    """The ``neural-em`` parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="neural-em",
        description="Continuous (neural and spline) representations of cryo-EM maps and "
        "density graphs drawn from them.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"neural-em {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        if importlib.util.find_spec(f"neural_em.cli.{name}") is None:
            continue  # a command not shipped in this build
        module = importlib.import_module(f"neural_em.cli.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (also used by ``sys.exit``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code = args.func(args)
    except (
        InputError,
        FileExistsError,
        FileNotFoundError,
        IsADirectoryError,
        PermissionError,
    ) as exc:
        if args.debug:
            raise
        print(f"neural-em {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"neural-em {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        if args.debug:
            raise
        print(f"neural-em {args.command}: error: out of memory (see --max-voxels)", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI reports, --debug shows the traceback
        if args.debug:
            raise
        print(
            f"neural-em {args.command}: internal error: {type(exc).__name__}: "
            f"{_one_line(exc)} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    return int(code or 0)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def run() -> None:
    """Entry point of the ``neural-em`` program: exit with :func:`main`'s code."""
    sys.exit(main())


if __name__ == "__main__":
    run()
