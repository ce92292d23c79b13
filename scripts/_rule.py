"""Shared set-up for rule scripts: logging into the rule's log file."""

from __future__ import annotations

import logging
import sys
from typing import Any


def setup_logging(smk: Any) -> logging.Logger:
    """Log to the rule's first log file (and stderr) at INFO; return the logger named after the
    rule (a script that serves several rules logs under the name of the one it runs for)."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if smk is not None and len(smk.log) > 0:
        handlers.append(logging.FileHandler(smk.log[0], mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        handlers=handlers,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return logging.getLogger(smk.rule if smk is not None else "rule")
