"""Checkpoints of a neural fit and the fingerprint that ties one to its map and arguments.

Checkpoints: with ``checkpoint=PATH`` the trainer writes, atomically, the finished groups'
weights and the full state of groups in progress (weights, Adam moments, generator state,
counters) as safetensors with a JSON header that records a fingerprint of the map and the
arguments. A rerun with the same fingerprint continues from there and gives the same weights as
an uninterrupted fit; a checkpoint with another fingerprint is ignored with a warning.

A group's trained weights and records travel as a :class:`GroupResult`, finished or restored.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neural_em.errors import InputError
from neural_em.fields.presets import Preset
from neural_em.fields.records import RegionRecord

logger = logging.getLogger(__name__)

#: Seconds between checkpoints of a group in progress (``NEURAL_EM_CHECKPOINT_EVERY_S``).
DEFAULT_CHECKPOINT_EVERY_S = 30.0
CHECKPOINT_VERSION = 1


@dataclasses.dataclass
class GroupResult:
    """Trained (best) weights ``[(R, out, in)]``, biases ``[(R, out)]`` (unfolded, float32,
    CPU) and one record per region (:class:`~neural_em.fields.records.RegionRecord` as a
    dict)."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    records: list[dict[str, Any]]


class Checkpoint:
    """Finished groups and groups in progress of one fit, in one safetensors file.

    The JSON header holds the fit's fingerprint; :meth:`load` ignores (with a warning) a file
    whose fingerprint differs or that cannot be read. Writes are atomic.
    """

    def __init__(self, path: str | os.PathLike | None, fingerprint: str) -> None:
        self.path = None if path is None else Path(path)
        self.fingerprint = fingerprint
        self.done: dict[int, GroupResult] = {}
        self.in_progress: dict[int, dict[str, Any]] = {}
        self.lock = threading.Lock()

    def load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        from neural_em.fields.fileformat import read_field_file

        try:
            header, tensors = read_field_file(self.path)
            if header.get("kind") != "neural-checkpoint":
                raise InputError("not a checkpoint")
            if header.get("fingerprint") != self.fingerprint:
                logger.warning(
                    "ignoring checkpoint %s: it belongs to a fit with other "
                    "arguments or another map",
                    self.path,
                )
                return
            ts = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}
            for key, records in header["done"].items():
                g = int(key)
                if not isinstance(records, list):
                    raise TypeError(f"group {g}: records are not a list")
                records = [RegionRecord.from_dict(r).to_dict() for r in records]
                n = len([k for k in ts if k.startswith(f"done{g}.w")])
                self.done[g] = GroupResult(
                    [ts[f"done{g}.w{k}"] for k in range(n)],
                    [ts[f"done{g}.b{k}"] for k in range(n)],
                    records,
                )
            for key, record in header["in_progress"].items():
                g = int(key)
                if not isinstance(record, dict):
                    raise TypeError(f"group {g}: progress record is not an object")
                prefix = f"prog{g}."
                self.in_progress[g] = {
                    "tensors": {k[len(prefix) :]: v for k, v in ts.items() if k.startswith(prefix)},
                    "record": record,
                }
            for state in self.in_progress.values():
                state["tensors"]["gen_state"] = state["tensors"]["gen_state"].to(torch.uint8)
                state["tensors"]["active"] = state["tensors"]["active"].long()
        except (InputError, KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            logger.warning("ignoring unreadable checkpoint %s (%s)", self.path, exc)
            self.done, self.in_progress = {}, {}
            return
        logger.info(
            "resuming from checkpoint %s: %d group(s) done, %d in progress",
            self.path,
            len(self.done),
            len(self.in_progress),
        )

    def finish(self, group: int, result: GroupResult) -> None:
        with self.lock:
            self.done[group] = result
            self.in_progress.pop(group, None)
            self._write()

    def update(self, group: int, state: dict[str, Any]) -> None:
        """Record the state of a group in progress (``GroupTrainer.state_dict()``)."""
        with self.lock:
            self.in_progress[group] = state
            self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        from neural_em.fields.fileformat import write_field_file

        tensors: dict[str, np.ndarray] = {}
        for g, res in self.done.items():
            for k, (w, b) in enumerate(zip(res.weights, res.biases, strict=True)):
                tensors[f"done{g}.w{k}"] = w.numpy()
                tensors[f"done{g}.b{k}"] = b.numpy()
        for g, state in self.in_progress.items():
            for name, t in state["tensors"].items():
                arr = t.numpy()
                if name in ("gen_state", "active"):
                    arr = arr.astype(np.int64)
                tensors[f"prog{g}.{name}"] = arr
        header = {
            "kind": "neural-checkpoint",
            "version": CHECKPOINT_VERSION,
            "fingerprint": self.fingerprint,
            "done": {str(g): res.records for g, res in self.done.items()},
            "in_progress": {str(g): s["record"] for g, s in self.in_progress.items()},
        }
        write_field_file(self.path, header, tensors, overwrite=True)


def fingerprint(data: np.ndarray, geometry: dict[str, Any], preset: Preset, seed: int) -> str:
    """A hash of the normalised map, its geometry, the preset (with overrides) and the seed."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(data, dtype=np.float32).tobytes())
    h.update(
        json.dumps(
            {
                "geometry": geometry,
                "preset": preset.to_dict(),
                "seed": int(seed),
                "version": CHECKPOINT_VERSION,
            },
            sort_keys=True,
        ).encode()
    )
    return h.hexdigest()


def checkpoint_interval() -> float:
    env = os.environ.get("NEURAL_EM_CHECKPOINT_EVERY_S")
    if env:
        try:
            return max(0.0, float(env))
        except ValueError as exc:
            raise InputError(f"NEURAL_EM_CHECKPOINT_EVERY_S={env!r} is not a number") from exc
    return DEFAULT_CHECKPOINT_EVERY_S
