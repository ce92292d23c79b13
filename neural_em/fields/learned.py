"""A learned field: a prior trained across maps refines a map on a 2x finer grid.

Method. The normalised map (the coarse grid, voxel ``v``) is upsampled 2x per axis by Fourier
(sinc, mirror boundary) interpolation onto a grid of spacing ``v / 2`` over the same box. A
small residual 3D CNN, trained across many maps (``tools/learned_train.py``),
corrects the new samples: the fine grid is packed into 2x2x2 blocks (space-to-depth: 8 channels
on the coarse grid, channel 0 the kept coarse voxel, i.e. the kept-voxel marking is the channel
position); the network sees those 8 channels and the same 8 of the cubic-spline 2x upsampling
(so it can lean on the spline where Fourier rings, e.g. at mask edges), divided by the map's
density scale (its 99th percentile of positive values), and returns corrections for the 7 new
samples of each block; the
kept voxels are never changed, so the field still passes through every voxel of the map.
Queries (density and per-Å gradient anywhere in the box) are answered by the cubic B-spline on
the refined grid, exactly as the Fourier field does on its upsampled grid.

Weights ship with the package (``neural_em/fields/weights/learned.safetensors``, with the
training configuration and data list in ``learned.json``) and are read with safetensors: no
pickle. A saved field (``.neural``) holds the normalised volume and the network's weights, so it
loads as it was fitted even if the packaged weights change; the refinement is recomputed on
load.

Shapes: ``volume (nz, ny, nx)`` float32; packed blocks ``(8, nz, ny, nx)``; refined grid
``(2nz-1, 2ny-1, 2nx-1)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from importlib import resources
from typing import Any

import numpy as np

from neural_em.errors import FieldFormatError, InputError
from neural_em.fields.classical import fourier_upsample
from neural_em.fields.fileformat import require, volume_from_file
from neural_em.fields.spline import SplineGridField
from neural_em.voxelmap import VoxelMap

logger = logging.getLogger(__name__)

#: Packaged weights (safetensors) and their record (JSON), in ``neural_em/fields/weights``.
WEIGHTS_NAME = "learned"
#: Input channels: Fourier and cubic-spline 2x upsampling, 8 block channels each.
IN_CHANNELS = 16
#: Default architecture: conv layers and channels of :class:`RefineNet`.
DEFAULT_ARCH = {"channels": 32, "layers": 7}
#: Largest coarse voxels per inference tile edge (plus a halo of ``layers`` voxels each side);
#: each axis is split into equal tiles no longer than this (a 100^3 map is one tile).
DEFAULT_TILE = 128
_TENSOR_PREFIX = "net."


# ====================================================================== packing
def pack_blocks(fine: np.ndarray) -> np.ndarray:
    """Fine grid ``(2a, 2b, 2c)`` (z, y, x) to blocks ``(8, a, b, c)``; channel
    ``4*dz + 2*dy + dx`` holds the sample at fine index ``(2i+dz, 2j+dy, 2k+dx)``."""
    a, b, c = (n // 2 for n in fine.shape)
    return np.ascontiguousarray(
        fine.reshape(a, 2, b, 2, c, 2).transpose(1, 3, 5, 0, 2, 4).reshape(8, a, b, c)
    )


def unpack_blocks(blocks: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_blocks`: ``(8, a, b, c)`` to ``(2a, 2b, 2c)``."""
    _, a, b, c = blocks.shape
    return np.ascontiguousarray(
        blocks.reshape(2, 2, 2, a, b, c).transpose(3, 0, 4, 1, 5, 2).reshape(2 * a, 2 * b, 2 * c)
    )


def fourier_blocks(coarse: np.ndarray) -> np.ndarray:
    """Fourier 2x upsampling of ``coarse (nz, ny, nx)`` packed as blocks ``(8, nz, ny, nx)``.

    The upsampled grid ``(2n-1)`` per axis is padded by one sample (edge) to ``2n`` so each
    coarse voxel owns one 2x2x2 block; channel 0 equals ``coarse``.
    """
    coarse = np.asarray(coarse, dtype=np.float32)
    up = fourier_upsample(coarse, (2, 2, 2), boundary="mirror")
    pad = [(0, 2 * n - m) for n, m in zip(coarse.shape, up.shape, strict=True)]
    blocks = pack_blocks(np.pad(up, pad, mode="edge"))
    blocks[0] = coarse  # exact (the upsampling passes through the samples up to rounding)
    return blocks


def spline_blocks(coarse: np.ndarray) -> np.ndarray:
    """Cubic B-spline 2x upsampling (mirror boundary, as :class:`SplineDensityMap`) of
    ``coarse (nz, ny, nx)`` packed like :func:`fourier_blocks`: ``(8, nz, ny, nx)``."""
    import scipy.ndimage

    coarse = np.asarray(coarse, dtype=np.float32)
    out_shape = [2 * n - 1 for n in coarse.shape]
    up = scipy.ndimage.zoom(
        coarse,
        [m / n for m, n in zip(out_shape, coarse.shape, strict=True)],
        order=3,
        mode="mirror",
        grid_mode=False,
    )
    up = up[: out_shape[0], : out_shape[1], : out_shape[2]]
    pad = [(0, 2 * n - m) for n, m in zip(coarse.shape, up.shape, strict=True)]
    blocks = pack_blocks(np.pad(up, pad, mode="edge"))
    blocks[0] = coarse
    return blocks


def network_input(coarse: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``(fourier blocks (8, ...), network input (16, ...), density scale)``: the input is
    the Fourier and the cubic-spline 2x upsampling, packed, divided by the density scale."""
    fb = fourier_blocks(coarse)
    s = density_scale(coarse)
    return fb, np.concatenate([fb, spline_blocks(coarse)]) / s, s


def density_scale(coarse: np.ndarray) -> float:
    """The map's density scale the network works in: the 99th percentile of its positive
    values (subsampled to 2^20 values on large maps), at least 1e-6."""
    flat = np.asarray(coarse, dtype=np.float32).ravel()
    if flat.size > (1 << 20):
        flat = flat[:: flat.size // (1 << 20) + 1]
    pos = flat[flat > 0]
    if pos.size == 0:
        return 1.0
    return float(max(np.percentile(pos, 99.0), 1e-6))


# ====================================================================== network
def _torch():
    import torch

    return torch


def build_net(channels: int = DEFAULT_ARCH["channels"], layers: int = DEFAULT_ARCH["layers"]):
    """The residual CNN: ``layers`` 3x3x3 convolutions (16 -> channels -> ... -> 7), leaky ReLU.

    Input ``(b, 16, z, y, x)`` (:func:`network_input`); output ``(b, 7, z, y, x)``
    corrections of channels 1..7 on the same scale. The last layer starts near zero, so an
    untrained network is (almost) Fourier interpolation.
    """
    torch = _torch()
    nn = torch.nn
    if layers < 2 or channels < 1:
        raise InputError(
            f"the network needs >= 2 layers and >= 1 channel, got {layers}, {channels}"
        )

    class RefineNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            sizes = [IN_CHANNELS] + [channels] * (layers - 1) + [7]
            self.convs = nn.ModuleList(
                nn.Conv3d(a, b, 3, padding=1) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
            )
            for conv in self.convs[:-1]:  # He init keeps the signal through the ReLUs
                nn.init.kaiming_normal_(conv.weight, a=0.1, nonlinearity="leaky_relu")
                nn.init.zeros_(conv.bias)
            nn.init.normal_(self.convs[-1].weight, std=1e-3)
            nn.init.zeros_(self.convs[-1].bias)

        def forward(self, x):
            h = x
            for conv in self.convs[:-1]:
                h = torch.nn.functional.leaky_relu(conv(h), 0.1)
            return self.convs[-1](h)

    return RefineNet()


def state_to_numpy(net: Any) -> dict[str, np.ndarray]:
    """The network's weights as float32 numpy arrays by name."""
    return {k: v.detach().cpu().numpy().astype(np.float32) for k, v in net.state_dict().items()}


def net_from_state(state: dict[str, np.ndarray], arch: dict[str, Any]):
    """Build the network of ``arch`` and load ``state`` (numpy arrays) into it (strict)."""
    torch = _torch()
    net = build_net(int(arch["channels"]), int(arch["layers"]))
    expected = net.state_dict()
    if set(state) != set(expected) or any(
        tuple(state[k].shape) != tuple(v.shape) for k, v in expected.items()
    ):
        raise InputError(
            f"network weights do not match the architecture {arch} (names or shapes differ)"
        )
    net.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}
    )
    net.eval()
    return net.to(memory_format=torch.channels_last_3d)


def weights_digest(state: dict[str, np.ndarray]) -> str:
    """sha256 over the weights (names sorted, float32 bytes): which network refined a map."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(np.ascontiguousarray(state[k], dtype=np.float32).tobytes())
    return h.hexdigest()


def load_weights(
    path: str | os.PathLike | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Weights and record of a trained network: ``path`` (a ``.safetensors`` file with a
    ``.json`` record beside it) or, by default, the ones packaged with neural-em.

    Read with safetensors (no pickle). The record holds ``arch`` (channels, layers) and the
    training configuration and data list.
    """
    import safetensors.numpy

    if path is None:
        base = resources.files("neural_em.fields") / "weights"
        raw = (base / f"{WEIGHTS_NAME}.safetensors").read_bytes()
        record = json.loads((base / f"{WEIGHTS_NAME}.json").read_text())
        state = safetensors.numpy.load(raw)
    else:
        path = os.fspath(path)
        json_path = os.path.splitext(path)[0] + ".json"
        if not os.path.isfile(path):
            raise InputError(f"{path}: no such weights file")
        state = safetensors.numpy.load_file(path)
        record = {}
        if os.path.isfile(json_path):
            with open(json_path) as fh:
                record = json.load(fh)
    record.setdefault("arch", dict(DEFAULT_ARCH))
    return {k: np.asarray(v, dtype=np.float32) for k, v in state.items()}, record


def refine(
    coarse: np.ndarray, net: Any, *, tile: int = DEFAULT_TILE, halo: int | None = None
) -> np.ndarray:
    """Refine ``coarse (nz, ny, nx)`` to ``(2nz-1, 2ny-1, 2nx-1)`` float32 with ``net``.

    The network runs on tiles of ``tile`` coarse voxels per edge with a halo of ``halo``
    (default: its number of layers, the receptive field) so memory stays bounded; tiles give
    the same values as one pass (the halo covers the receptive field).
    """
    torch = _torch()
    coarse = np.asarray(coarse, dtype=np.float32)
    if coarse.ndim != 3:
        raise InputError(f"coarse volume must be (nz, ny, nx), got {coarse.shape}")
    blocks, inp, scale = network_input(coarse)
    if halo is None:
        halo = len(net.convs)
    x = torch.from_numpy(inp)
    out = blocks.copy()
    dims = coarse.shape
    cuts = [np.linspace(0, n, -(-n // max(1, int(tile))) + 1).round().astype(int) for n in dims]
    with torch.inference_mode():
        for z0, z1 in zip(cuts[0][:-1], cuts[0][1:], strict=True):
            for y0, y1 in zip(cuts[1][:-1], cuts[1][1:], strict=True):
                for x0, x1 in zip(cuts[2][:-1], cuts[2][1:], strict=True):
                    start, stop = (z0, y0, x0), (z1, y1, x1)
                    lo = [max(0, s - halo) for s in start]
                    hi = [min(n, e + halo) for e, n in zip(stop, dims, strict=True)]
                    part = x[:, lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]][None]
                    part = part.contiguous(memory_format=torch.channels_last_3d)
                    r = net(part)[0].numpy()
                    a = [s - low for s, low in zip(start, lo, strict=True)]
                    b = [e - low for e, low in zip(stop, lo, strict=True)]
                    out[1:, z0:z1, y0:y1, x0:x1] += (
                        scale * r[:, a[0] : b[0], a[1] : b[1], a[2] : b[2]]
                    )
    fine = unpack_blocks(out)
    return np.ascontiguousarray(fine[: 2 * dims[0] - 1, : 2 * dims[1] - 1, : 2 * dims[2] - 1])


# ====================================================================== field
class LearnedDensityMap(SplineGridField):
    """A map refined 2x by a network trained across maps, queried by a cubic B-spline on the
    refined grid (``refined``; gradients and Hessians analytic).

    ``weights``: ``None`` (the packaged network), a path to a ``.safetensors`` file (with its
    ``.json`` record beside it), or a ``(state, record)`` pair from :func:`load_weights`.
    ``tile``: coarse voxels per inference tile edge. Torch is imported when a field is built.
    """

    kind = "learned"

    def __init__(self, volume: VoxelMap, *, weights: Any = None, tile: int = DEFAULT_TILE) -> None:
        if isinstance(weights, tuple):
            state, record = weights
        else:
            state, record = load_weights(weights)
        arch = {
            "channels": int(record["arch"]["channels"]),
            "layers": int(record["arch"]["layers"]),
        }
        digest = weights_digest(state)
        super().__init__(
            volume,
            {
                "interpolation": "learned: Fourier 2x upsampling corrected by a residual 3D CNN "
                "trained across maps, then cubic B-spline",
                "arch": arch,
                "weights_sha256": digest,
                "weights_name": str(record.get("name", WEIGHTS_NAME)),
            },
        )
        self._state = state
        self._record = record
        net = net_from_state(state, arch)
        fine_data = refine(self.volume, net, tile=tile)
        fine = VoxelMap(
            data=fine_data,
            voxel_size=self.voxel_size / 2.0,
            origin=self.origin,
            map_id=self.map_id,
            normalisation=self.normalisation,
        )
        self.refined = fine
        self._set_grid(fine)

    def tensors(self) -> dict[str, np.ndarray]:
        """The normalised volume and the network's weights (the refinement is recomputed)."""
        return {"volume": self.volume, **{_TENSOR_PREFIX + k: v for k, v in self._state.items()}}

    @classmethod
    def from_file_contents(
        cls, header: dict[str, Any], tensors: dict[str, np.ndarray], path: str | os.PathLike
    ) -> LearnedDensityMap:
        volume = volume_from_file(cls.kind, header, tensors, path)
        arch = require(header, "arch", dict, path)
        state = {
            k[len(_TENSOR_PREFIX) :]: v for k, v in tensors.items() if k.startswith(_TENSOR_PREFIX)
        }
        if not state:
            raise FieldFormatError("learned field file holds no network weights", path)
        try:
            return cls(
                volume, weights=(state, {"arch": arch, "name": header.get("weights_name", "")})
            )
        except (InputError, KeyError, TypeError, ValueError) as exc:
            raise FieldFormatError(f"network weights unusable: {exc}", path) from exc
