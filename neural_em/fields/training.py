"""A whole fit of the neural map: regions into groups, groups over devices.

A fit splits a normalised map into regions (:mod:`neural_em.fields.regions`), puts the
regions into groups and trains each group with :class:`~neural_em.fields.trainer.GroupTrainer`;
with several devices each takes the next group from a queue. Finished groups go to a
checkpoint, so a fit killed half-way resumes where it stopped.

Presets and device names: :mod:`neural_em.fields.presets`; checkpoints and fingerprints:
:mod:`neural_em.fields.checkpoint`; samples: :mod:`neural_em.fields.samples`; the per-region
record the trainer writes: :mod:`neural_em.fields.records`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from neural_em.fields import siren
from neural_em.fields.checkpoint import (
    Checkpoint,
    GroupResult,
    checkpoint_interval,
    fingerprint,
)
from neural_em.fields.presets import Preset, parse_devices
from neural_em.fields.records import RegionRecord
from neural_em.fields.samples import region_samples
from neural_em.fields.trainer import GroupTrainer

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------- whole fits
@dataclasses.dataclass
class FitResult:
    """Weights of the trained regions ``[(R, out, in)]``/``[(R, out)]`` (numpy float32), one
    record per region of ``boxes`` (empty ones included), devices and wall-clock seconds."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]
    trained: list[int]
    records: list[dict[str, Any]]
    devices: list[str]
    seconds: float
    history: list[list[float]]


def fit_regions(
    data: np.ndarray,
    boxes: Sequence[tuple[Sequence[int], Sequence[int]]],
    preset: Preset,
    *,
    devices: str | Sequence[str] = ("cpu",),
    seed: int = 0,
    checkpoint: str | os.PathLike | None = None,
    progress: bool = False,
    geometry: dict[str, Any] | None = None,
) -> FitResult:
    """Train one SIREN per region box of ``data`` ``(nz, ny, nx)`` (normalised to [0, 1]).

    Regions whose maximum is below ``preset.skip_empty_below`` are skipped (record stop
    ``"empty"``); the others are split into groups of ``preset.group_regions`` and the groups
    shared among ``devices`` (one worker thread per device).
    """
    start = time.perf_counter()
    devs = parse_devices(devices)
    n_regions = len(boxes)
    trained = []
    for r, (lo, hi) in enumerate(boxes):
        block = data[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
        if preset.skip_empty_below is None or float(block.max()) >= preset.skip_empty_below:
            trained.append(r)
    size = preset.group_regions
    if preset.group_regions_cuda is not None and devs[0].startswith("cuda"):
        size = preset.group_regions_cuda
    groups = [trained[i : i + size] for i in range(0, len(trained), size)]
    ckpt = Checkpoint(checkpoint, fingerprint(data, geometry or {}, preset, seed))
    ckpt.load()
    every = checkpoint_interval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(trained), unit="region", desc=f"fit ({preset.name})")
        bar.update(sum(len(groups[g]) for g in ckpt.done if g < len(groups)))
    bar_lock = threading.Lock()
    results: dict[int, GroupResult] = {g: r for g, r in ckpt.done.items() if g < len(groups)}
    histories: list[list[float]] = []

    def train_group(g: int, device: str) -> None:
        boxes_g = [boxes[r] for r in groups[g]]
        samples = region_samples(data, boxes_g)
        shown = [0]

        def on_progress(n_done: int, epoch: int, loss: float) -> None:
            if bar is None:
                return
            with bar_lock:
                bar.update(n_done - shown[0])
                shown[0] = n_done
                bar.set_postfix(group=f"{g + 1}/{len(groups)}", epoch=epoch, loss=f"{loss:.2e}")

        group_seed = (int(seed) * 1_000_003 + g * 7919 + preset.seed_offset) % (2**62)
        trainer = GroupTrainer(
            preset,
            samples,
            seed=group_seed,
            device=device,
            state=ckpt.in_progress.get(g),
            on_progress=on_progress,
        )
        res = trainer.run(
            checkpoint=(lambda t: ckpt.update(g, t.state_dict())) if checkpoint else None,
            checkpoint_every_s=every,
        )
        results[g] = res
        with bar_lock:
            histories.extend([[g, *h] for h in trainer.history])
        ckpt.finish(g, res)

    todo = [g for g in range(len(groups)) if g not in results]
    try:
        if len(devs) == 1:
            for g in todo:
                train_group(g, devs[0])
        else:
            _run_on_devices(todo, devs, train_group)
    finally:
        if bar is not None:
            bar.close()
    records: list[dict[str, Any]] = [RegionRecord.empty().to_dict() for _ in range(n_regions)]
    weights: list[list[torch.Tensor]] = []
    biases: list[list[torch.Tensor]] = []
    for g in range(len(groups)):
        res = results[g]
        for r, rec in zip(groups[g], res.records, strict=True):
            records[r] = rec
        weights.append(res.weights)
        biases.append(res.biases)
    n_layers = len(preset.widths) - 1
    if trained:
        w_all = [torch.cat([w[k] for w in weights]).numpy() for k in range(n_layers)]
        b_all = [torch.cat([b[k] for b in biases]).numpy() for k in range(n_layers)]
    else:
        w_all = [np.zeros((0, o, i), np.float32) for i, o in siren.layer_dims(preset.widths)]
        b_all = [np.zeros((0, o), np.float32) for _, o in siren.layer_dims(preset.widths)]
    return FitResult(w_all, b_all, trained, records, devs, time.perf_counter() - start, histories)


def _run_on_devices(
    todo: list[int], devices: list[str], train_group: Callable[[int, str], None]
) -> None:
    """Share groups among devices: one worker thread per device pulls from a queue."""
    work: queue.Queue[int] = queue.Queue()
    for g in todo:
        work.put(g)
    errors: list[BaseException] = []

    def worker(device: str) -> None:
        while not errors:
            try:
                g = work.get_nowait()
            except queue.Empty:
                return
            try:
                train_group(g, device)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker, args=(d,), name=f"fit-{d}") for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
