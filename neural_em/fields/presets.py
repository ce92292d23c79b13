"""Training recipes of the neural map (presets) and device names: the file to edit first.

Presets (see :data:`PRESETS` and ``docs/neural.md``):

* ``paper``: the study's protocol. Regions up to 64³ voxels, a 3 -> 256 -> 4 × 256 -> 1 SIREN,
  Adam lr 1e-4, full batch, MSE; stop when the best loss < 1e-5, or after 25 epochs without
  improvement once the best loss < 4e-4; plus an epoch cap and a time budget (the study had
  neither), and a real copy of the best weights. One region per group: trained one after another.
* ``fast``: this project's design. Regions of 24³ voxels (overlap 4), a 3 -> 56 -> 56 -> 56 -> 1
  SIREN, regions trained in batched groups (8 on CPU, where small groups stay in cache; 128 on
  GPUs), mini-batches, Adam with a larger step and a cosine decay, a first layer started at
  the paper preset's frequency per voxel (ω0 = 30 × 24/64 over 24-voxel regions, not 30: the
  field then oscillates less between voxels), output bias initialised at the region mean, a softplus output (density = softplus_30((y + 1) / 2): masked and clipped
  voxels are exact zeros, which the network reaches by going below -1 instead of fitting a
  step), regions without density skipped, and a per-region stop on the error itself (max and
  mean-square).

A preset is a frozen dataclass; :func:`get_preset` returns one by name with the epoch cap and
time budget overridden where given. :func:`parse_devices` checks device names before anything
is read or trained.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any

import torch

from neural_em.errors import InputError


@dataclasses.dataclass(frozen=True)
class Preset:
    """A training recipe. Losses are mean squared errors on targets scaled to [-1, 1];
    errors named ``*_error`` are absolute, in normalised density units ([0, 1])."""

    name: str
    region_size: int  #: largest region edge, voxels (overlap included)
    overlap: int  #: voxels shared by neighbouring regions
    hidden_width: int
    hidden_layers: int
    lr: float  #: Adam step size (standard SIREN parameterisation)
    batch_points: int | None  #: voxels per region per step; None: full batch
    max_epochs: int  #: epoch cap per region
    time_budget_s: float  #: wall-clock training budget per group of regions
    schedule: str = "constant"  #: "constant" or "cosine" (over max_epochs)
    min_lr_fraction: float = 1.0  #: cosine floor, as a fraction of lr
    stop_loss: float | None = None  #: converged when the best loss < this
    patience_epochs: int | None = None  #: stop after this many epochs without improvement...
    patience_below: float = math.inf  #: ...once the best loss < this
    stop_max_error: float | None = None  #: converged when max error <= this and ...
    stop_mse: float | None = None  #: ... loss <= this
    eval_every: int = 1  #: epochs between full evaluations (mini-batch presets)
    skip_empty_below: float | None = None  #: skip regions whose max density < this
    bias_at_mean: bool = False  #: initialise the output bias at the region's mean target
    focus_error: float | None = None  #: weight voxels by 1 + (error / scale)^2, scale >= this
    focus_max: float = 50.0  #: largest voxel weight
    focus_start: float = 0.3  #: fraction of max_epochs after which voxel weights apply
    group_regions: int = 1  #: regions trained together in one batched network (CPU)
    group_regions_cuda: int | None = None  #: the same on GPUs (None: ``group_regions``)
    #: ω0 of the first sine layer at initialisation (SIREN: 30); the saved weights keep the
    #: standard parameterisation (ω0 = 30), so files do not depend on it
    first_omega0: float = 30.0
    softplus_beta: float | None = None  #: density = softplus_β((out + 1) / 2); None: linear
    seed_offset: int = 0

    @property
    def widths(self) -> list[int]:
        """Layer widths ``[3, hidden..., 1]``."""
        return [3] + [self.hidden_width] * self.hidden_layers + [1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able settings (infinite values as None)."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in dataclasses.asdict(self).items()
        }


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        region_size=64,
        overlap=4,
        hidden_width=256,
        hidden_layers=5,
        lr=1e-4,
        batch_points=None,
        max_epochs=5000,
        time_budget_s=3600.0,
        stop_loss=1e-5,
        patience_epochs=25,
        patience_below=4e-4,
        group_regions=1,
    ),
    "fast": Preset(
        name="fast",
        region_size=24,
        overlap=4,
        hidden_width=56,
        hidden_layers=3,
        lr=2e-3,
        batch_points=4096,
        max_epochs=300,
        time_budget_s=900.0,
        schedule="cosine",
        min_lr_fraction=0.02,
        stop_max_error=0.03,
        stop_mse=5e-5,
        eval_every=5,
        skip_empty_below=1e-3,
        bias_at_mean=True,
        group_regions=8,
        group_regions_cuda=128,
        first_omega0=30.0 * 24 / 64,
        softplus_beta=30.0,
    ),
}


def get_preset(
    name: str | Preset, *, max_epochs: int | None = None, time_budget_s: float | None = None
) -> Preset:
    """A preset by name, with the epoch cap and time budget overridden where given."""
    if isinstance(name, Preset):
        preset = name
    else:
        try:
            preset = PRESETS[str(name)]
        except KeyError as exc:
            raise InputError(f"unknown preset {name!r} (known: {', '.join(PRESETS)})") from exc
    changes: dict[str, Any] = {}
    if max_epochs is not None:
        if int(max_epochs) < 1:
            raise InputError(f"max_epochs must be at least 1, got {max_epochs}")
        changes["max_epochs"] = int(max_epochs)
    if time_budget_s is not None:
        if not float(time_budget_s) > 0:
            raise InputError(f"time_budget_s must be positive, got {time_budget_s}")
        changes["time_budget_s"] = float(time_budget_s)
    return dataclasses.replace(preset, **changes) if changes else preset


def parse_devices(devices: str | Sequence[str]) -> list[str]:
    """Check device names: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a list of them.

    Returns canonical names (``"cuda"`` becomes ``"cuda:0"``), duplicates removed.
    Raises :class:`InputError` for unknown names or CUDA devices that are not present.
    """
    if isinstance(devices, str | os.PathLike):
        devices = [str(devices)]
    names = [str(d).strip().lower() for d in devices]
    if not names:
        raise InputError("devices must name at least one device")
    out: list[str] = []
    for name in names:
        if name == "cpu":
            canon = "cpu"
        elif name == "cuda" or name.startswith("cuda:"):
            index = 0
            if name != "cuda":
                try:
                    index = int(name[5:])
                except ValueError as exc:
                    raise InputError(f"device {name!r}: expected cuda:N with N a number") from exc
                if index < 0:
                    raise InputError(f"device {name!r}: negative index")
            if not torch.cuda.is_available():
                raise InputError(
                    f"device {name!r} requested but CUDA is not available here (use --device cpu)"
                )
            if index >= torch.cuda.device_count():
                raise InputError(
                    f"device {name!r} requested but only "
                    f"{torch.cuda.device_count()} CUDA device(s) present"
                )
            canon = f"cuda:{index}"
        else:
            raise InputError(f"unknown device {name!r} (use cpu, cuda or cuda:N)")
        if canon not in out:
            out.append(canon)
    if "cpu" in out and len(out) > 1:
        raise InputError("do not mix cpu with cuda devices; list the GPUs only")
    return out
