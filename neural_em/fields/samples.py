"""Training samples of a group of regions: every voxel of each box, as padded tensors."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from neural_em.fields.regions import region_scaling


@dataclasses.dataclass
class RegionData:
    """Training samples of a group of regions, padded to a common length.

    ``x`` ``(R, N, 3)`` coordinates in [-1, 1]; ``y`` ``(R, N)`` targets in [-1, 1];
    ``counts`` ``(R,)`` valid samples per region (the rest is padding).
    """

    x: torch.Tensor
    y: torch.Tensor
    counts: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        n = self.x.shape[1]
        return torch.arange(n).unsqueeze(0) < self.counts.unsqueeze(1)


def region_samples(
    data: np.ndarray, boxes: Sequence[tuple[Sequence[int], Sequence[int]]]
) -> RegionData:
    """Coordinates and targets of every voxel of each box of ``data`` ``(nz, ny, nx)``."""
    sizes = [int(np.prod(np.asarray(hi) - np.asarray(lo))) for lo, hi in boxes]
    n_max = max(sizes)
    x = np.zeros((len(boxes), n_max, 3), dtype=np.float32)
    y = np.full((len(boxes), n_max), -1.0, dtype=np.float32)
    for r, (lo, hi) in enumerate(boxes):
        lo_a, hi_a = np.asarray(lo), np.asarray(hi)
        zz, yy, xx = np.meshgrid(*[np.arange(lo_a[a], hi_a[a]) for a in (2, 1, 0)], indexing="ij")
        u = np.stack([xx.ravel(), yy.ravel(), zz.ravel()], axis=1).astype(np.float64)
        centre, half = region_scaling(lo_a, hi_a)
        x[r, : sizes[r]] = (u - centre) / half
        y[r, : sizes[r]] = (
            2.0 * data[lo_a[2] : hi_a[2], lo_a[1] : hi_a[1], lo_a[0] : hi_a[0]].ravel() - 1
        )
    return RegionData(
        torch.from_numpy(x), torch.from_numpy(y), torch.tensor(sizes, dtype=torch.int64)
    )
