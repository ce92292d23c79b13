"""Train the learned field's network (see :mod:`neural_em.fields.learned`): a developer tool
beside the package, not part of it.

    python tools/learned_train.py --data-dir ../shared/data \\
        --out neural_em/fields/weights/learned.safetensors --minutes 30 --threads 1

The real maps it trains on are listed in ``tools/learned_train_data.json`` (name -> map file and
the models of the same structure, relative to ``--data-dir``).

Task: a map ``T`` (voxel 0.5-1.5 Å) is decimated to its even voxels ``T[::2, ::2, ::2]``; the
network corrects the Fourier 2x upsampling of that coarse map towards ``T``. Loss: Charbonnier
(smooth L1) on the 7 new samples of each 2x2x2 block, weighted to the molecule, each patch's
loss divided by Fourier's on it plus the batch mean (the benchmark reports ratios per map). Training volumes,
generated on the fly into a pool from which patches are drawn:

* **real maps** of the data folder, 80 % of the volumes (random boxes, biased to density;
  native voxel, or in 10 % resampled to a coarser one up to 1.5 Å);
* **maps simulated from deposited models** (:func:`neural_em.simulate.simulate_map`, randomly
  rotated, nominal resolution 2-5 Å with the Gaussians of a molmap at 1-2x that (real maps
  are blurrier than a molmap), voxel = nominal / 2.4-3.6 within 0.5-1.5 Å, all heavy atoms or
  the study's C, N, O);
* **random protein-like chains** (helical and coil segments with side-chain atoms) simulated
  the same way: unlimited shapes that no test map contains.

Augmentation: axis permutations and flips, soft masks around the density and masked boxes
(zero outside a box) for all volumes; blurring (B-factor 0 to 80 Å^2, 30 %) and correlated
noise (1-5 % of the density scale, 25 %) for simulated ones only (real maps keep their own:
sharpening and noise on them taught corrections that hurt native maps, measured); then the
study's normalisation. Intensity scaling is not needed: the network works on the map divided by its
density scale. ``--exclude NAME`` (repeatable) leaves a map *and the models of the same
structure* out of training (leave-one-map-out folds). Output: ``NAME.safetensors`` (weights,
loadable without pickle) and ``NAME.json`` (architecture, configuration, data list, loss
history), written every two minutes and at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage

from neural_em.fields.learned import (
    DEFAULT_ARCH,
    IN_CHANNELS,
    build_net,
    network_input,
    pack_blocks,
    state_to_numpy,
)

logger = logging.getLogger(__name__)

#: The data list: name -> (map file, models of the same structure), relative to --data-dir.
DATA_LIST = Path(__file__).with_name("learned_train_data.json")


def read_data_list(path: Path = DATA_LIST) -> dict[str, tuple[str, tuple[str, ...]]]:
    """The real maps to train on: name -> (map file, models of the same structure)."""
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {name: (entry["map"], tuple(entry["models"])) for name, entry in raw.items()}


SHARED_MAPS = read_data_list()


@dataclasses.dataclass
class TrainConfig:
    minutes: float = 30.0
    max_steps: int | None = None
    batch: int = 8
    patch: int = 16  # coarse voxels per patch edge (32 fine)
    lr: float = 2e-3
    channels: int = DEFAULT_ARCH["channels"]
    layers: int = DEFAULT_ARCH["layers"]
    pool: int = 32
    refresh_every: int = 6  # steps between new pool volumes
    # Share of pool volumes from real maps (rest: simulated from models, random chains). With
    # half the pool simulated, the network learned corrections for simulated maps that made
    # real ones worse than Fourier (1.25x on held-out maps, measured); real maps lead.
    weights_real: float = 0.8
    weights_chain: float = 0.1
    box_min: int = 40  # fine voxels per training volume edge
    box_max: int = 64
    seed: int = 0
    save_every_s: float = 120.0
    charbonnier_eps: float = 0.01  # on the density-scale units of the network


# ====================================================================== sources
def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    a, b, c, d = q
    return np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a - b * b + c * c - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a - b * b - c * c + d * d],
        ]
    )


def random_chain_atoms(
    rng: np.random.Generator, n_residues: int = 120
) -> tuple[np.ndarray, np.ndarray]:
    """A random protein-like chain: positions ``(n, 3)`` Å and atomic numbers ``(n,)``.

    Helical (rise 1.5 Å, 100 degrees a residue, radius 2.3 Å) and coil segments (3.8 Å steps,
    kept compact), backbone N, C, O beside each C-alpha and 0-7 side-chain atoms in 1.5 Å steps.
    """
    ca = [np.zeros(3)]
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    while len(ca) < n_residues:
        if rng.random() < 0.5:  # helix
            n = int(rng.integers(6, 20))
            axis = direction
            u = np.cross(axis, rng.normal(size=3))
            u /= np.linalg.norm(u)
            v = np.cross(axis, u)
            start = ca[-1] + 2.3 * u
            for i in range(n):
                t = np.deg2rad(100.0) * i
                ca.append(start + 1.5 * i * axis - 2.3 * (np.cos(t) * u + np.sin(t) * v))
            direction = axis
        else:  # coil / strand
            n = int(rng.integers(3, 12))
            for _ in range(n):
                step = direction + 0.6 * rng.normal(size=3) - 0.01 * ca[-1]  # drift to centre
                direction = step / np.linalg.norm(step)
                ca.append(ca[-1] + 3.8 * direction)
        turn = rng.normal(size=3) - 0.03 * ca[-1]
        direction = turn / np.linalg.norm(turn)
    ca_arr = np.array(ca[:n_residues])
    pos, z = [], []
    for i, p in enumerate(ca_arr):
        nxt = ca_arr[min(i + 1, len(ca_arr) - 1)] - ca_arr[max(i - 1, 0)]
        nxt = nxt / (np.linalg.norm(nxt) + 1e-9)
        side = rng.normal(size=3)
        side -= side @ nxt * nxt
        side /= np.linalg.norm(side) + 1e-9
        pos += [
            p,
            p - 1.2 * nxt + 0.6 * side,
            p + 1.3 * nxt + 0.5 * side,
            p + 1.8 * nxt + 1.6 * side,
        ]
        z += [6, 7, 6, 8]
        q = p.copy()
        d = -side
        for _ in range(int(rng.integers(0, 8))):
            d = d + 0.7 * rng.normal(size=3)
            d /= np.linalg.norm(d)
            q = q + 1.5 * d
            pos.append(q.copy())
            z.append(int(rng.choice([6, 6, 6, 7, 8, 16])))
    return np.array(pos), np.array(z, dtype=np.float64)


def _simulate_box(
    xyz: np.ndarray,
    znum: np.ndarray,
    *,
    resolution: float,
    voxel: float,
    box: int,
    centre: np.ndarray,
) -> np.ndarray:
    """Gaussian-per-atom map (Chimera molmap amplitudes) on a ``box``^3 grid centred at
    ``centre``; returns ``(box, box, box)`` float32 (z, y, x)."""
    from neural_em.simulate import Atoms, simulate_map

    origin = centre - voxel * (box - 1) / 2.0
    sigma = 0.225 * resolution
    pad = 5 * sigma
    lo, hi = origin - pad, origin + voxel * (box - 1) + pad
    keep = np.all((xyz >= lo) & (xyz <= hi), axis=1)
    if not keep.any():
        return np.zeros((box, box, box), dtype=np.float32)
    atoms = Atoms(
        xyz=xyz[keep],
        atomic_number=znum[keep],
        element=tuple("C" for _ in range(int(keep.sum()))),
        name=tuple("CA" for _ in range(int(keep.sum()))),
    )
    vm = simulate_map(
        atoms, resolution_A=resolution, voxel_size_A=voxel, origin=origin, shape_xyz=(box, box, box)
    )
    return np.asarray(vm.data, dtype=np.float32)


class Sources:
    """The training data: real maps and models (minus excluded names), and random chains."""

    def __init__(
        self,
        data_dir: Path | None,
        exclude: list[str],
        *,
        extra_maps: list[Path] = (),
        extra_models: list[Path] = (),
    ) -> None:
        from neural_em.simulate import read_atoms
        from neural_em.voxelmap import read_map

        self.maps: list[tuple[str, Any]] = []
        self.models: list[tuple[str, np.ndarray, np.ndarray]] = []
        self.used: dict[str, list[str]] = {"maps": [], "models": [], "excluded": list(exclude)}
        unknown = [e for e in exclude if e not in SHARED_MAPS]
        if unknown:
            raise ValueError(
                f"--exclude: unknown map name(s) {unknown} (known: {', '.join(SHARED_MAPS)})"
            )
        seen_models: set[str] = set()
        if data_dir is not None:
            for name, (map_rel, models) in SHARED_MAPS.items():
                if name in exclude:
                    continue
                path = data_dir / map_rel
                if path.is_file():
                    self._add_map(name, read_map(path))
                else:
                    logger.warning("training map %s absent: skipped", path)
                for rel in models[:1]:  # one model per structure
                    mpath = data_dir / rel
                    if mpath.is_file() and mpath.stem not in seen_models:
                        seen_models.add(mpath.stem)
                        self._add_model(rel, read_atoms(mpath, elements=None))
        for p in extra_maps:
            self._add_map(Path(p).name, read_map(p))
        for p in extra_models:
            self._add_model(Path(p).name, read_atoms(p, elements=None))

    def _add_map(self, name: str, vmap: Any) -> None:
        vm = vmap.normalised()
        self.maps.append((name, vm))
        self.used["maps"].append(name)

    def _add_model(self, name: str, atoms: Any) -> None:
        xyz = np.asarray(atoms.xyz, dtype=np.float64)
        self.models.append(
            (name, xyz - xyz.mean(axis=0), np.asarray(atoms.atomic_number, dtype=np.float64))
        )
        self.used["models"].append(name)


# ====================================================================== volumes
def _real_volume(rng: np.random.Generator, vmap: Any, box: int) -> np.ndarray | None:
    data = vmap.data
    vs = np.asarray(vmap.voxel_size, dtype=np.float64)[::-1]  # z, y, x
    target = float(rng.uniform(max(0.5, vs.min()), max(1.5, vs.max() * 1.01)))
    if rng.random() < 0.9 or vs.max() > 1.5:
        zoom = np.ones(3)
    else:
        zoom = vs / target  # <= 1: coarser than native
    need = np.minimum(np.ceil(box / zoom).astype(int) + 4, data.shape)
    dense = np.argwhere(data[::2, ::2, ::2] > 0.1) * 2
    if len(dense) and rng.random() < 0.85:
        c = dense[rng.integers(len(dense))]
    else:
        c = np.array([rng.integers(n) for n in data.shape])
    lo = np.clip(c - need // 2, 0, np.array(data.shape) - need)
    crop = data[lo[0] : lo[0] + need[0], lo[1] : lo[1] + need[1], lo[2] : lo[2] + need[2]]
    if np.any(zoom != 1):
        crop = scipy.ndimage.zoom(crop, zoom, order=3, mode="mirror", grid_mode=False)
    crop = crop[:box, :box, :box]
    if min(crop.shape) < 12:
        return None
    return np.asarray(crop, dtype=np.float32)


def _sim_volume(
    rng: np.random.Generator, xyz: np.ndarray, znum: np.ndarray, box: int
) -> np.ndarray:
    # Real maps are blurrier than a molmap at their nominal resolution (B-factors): the
    # Gaussians are those of a molmap at 1-2x the nominal resolution (measured: sharp
    # molmaps alone taught corrections that made real maps worse than Fourier).
    nominal = float(rng.uniform(2.0, 5.0))
    voxel = float(np.clip(nominal / rng.uniform(2.4, 3.6), 0.5, 1.5))
    resolution = nominal * float(rng.uniform(1.0, 2.0))
    xyz = xyz @ _random_rotation(rng).T
    centre = xyz[rng.integers(len(xyz))] + rng.normal(scale=3.0, size=3)
    if rng.random() < 0.3:  # backbone-only (the study's C, N, O selection) look
        keep = np.isin(znum, (6.0, 7.0, 8.0))
        xyz, znum = xyz[keep], znum[keep]
    return _simulate_box(xyz, znum, resolution=resolution, voxel=voxel, box=box, centre=centre)


def _bfactor(rng: np.random.Generator, vol: np.ndarray, voxel_guess: float = 1.0) -> np.ndarray:
    b = float(rng.uniform(0.0, 80.0))
    f = np.fft.rfftn(vol)
    freqs = np.meshgrid(
        *(np.fft.fftfreq(n) for n in vol.shape[:2]), np.fft.rfftfreq(vol.shape[2]), indexing="ij"
    )
    s2 = sum(q * q for q in freqs) / voxel_guess**2
    gain = np.exp(-b * s2 / 4.0)
    if b < 0:  # sharpening: keep the boost bounded (a real map's sharpening is band-limited)
        gain = np.minimum(gain, 4.0)
    return np.fft.irfftn(f * gain, s=vol.shape, axes=(0, 1, 2)).astype(np.float32)


def augment(rng: np.random.Generator, vol: np.ndarray, *, real: bool = False) -> np.ndarray:
    """Blur and noise (simulated volumes only), soft mask or masked box, permutation and
    flips (raw scale)."""
    scale = float(np.percentile(np.abs(vol), 99.5)) or 1.0
    # Real maps keep their own noise and blur: sharpening and added noise taught corrections
    # that made native real maps worse than Fourier (measured on a training map, EMD-6272,
    # 1.06-1.2x); simulated ones get blur (B >= 0) and mild noise.
    if not real and rng.random() < 0.3:
        vol = _bfactor(rng, vol)
    if not real and rng.random() < 0.25:
        noise = scipy.ndimage.gaussian_filter(
            rng.normal(size=vol.shape).astype(np.float32), float(rng.uniform(0.5, 1.5))
        )
        noise *= scale * float(rng.uniform(0.01, 0.05)) / (float(noise.std()) + 1e-9)
        vol = vol + noise
    r = rng.random()
    if r < 0.3:  # soft mask around the density (as deposited masked maps)
        smooth = scipy.ndimage.gaussian_filter(vol, 2.0)
        mask = smooth > float(rng.uniform(0.05, 0.3)) * scale
        mask = scipy.ndimage.binary_dilation(mask, iterations=int(rng.integers(0, 4)))
        soft = scipy.ndimage.gaussian_filter(mask.astype(np.float32), float(rng.uniform(0, 2)))
        vol = vol * soft
    elif r < 0.45:  # masked box: zero outside a random sub-box (hard edge)
        lo = [int(rng.integers(0, n // 3 + 1)) for n in vol.shape]
        hi = [n - int(rng.integers(0, n // 3 + 1)) for n in vol.shape]
        box = np.zeros_like(vol)
        box[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = 1
        vol = vol * box
    vol = np.transpose(vol, rng.permutation(3))
    for ax in range(3):
        if rng.random() < 0.5:
            vol = np.flip(vol, ax)
    vol = np.maximum(vol, 0.0)  # the study's normalisation: negatives to 0, max to 1
    top = float(vol.max())
    return np.ascontiguousarray(vol / top if top > 0 else vol, dtype=np.float32)


def training_pair(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """Network input (Fourier and spline 2x of the even voxels) and target blocks, both
    divided by the coarse map's density scale: ``((16, a, b, c), (8, a, b, c), scale)``."""
    odd = [n if n % 2 else n - 1 for n in truth.shape]
    truth = truth[: odd[0], : odd[1], : odd[2]]
    coarse = truth[::2, ::2, ::2]
    if coarse.max() <= 0:
        return None
    _, inp, s = network_input(coarse)
    tgt = pack_blocks(np.pad(truth, [(0, 1)] * 3, mode="edge"))
    return inp, tgt / s, s


def make_volume(
    rng: np.random.Generator, sources: Sources, cfg: TrainConfig
) -> tuple[np.ndarray, np.ndarray] | None:
    box = int(rng.integers(cfg.box_min, cfg.box_max + 1))
    r = rng.random()
    real = bool(sources.maps) and r < cfg.weights_real
    if real:
        _, vm = sources.maps[rng.integers(len(sources.maps))]
        vol = _real_volume(rng, vm, box)
    elif sources.models and r < 1.0 - cfg.weights_chain:
        _, xyz, znum = sources.models[rng.integers(len(sources.models))]
        vol = _sim_volume(rng, xyz, znum, box)
    else:
        xyz, znum = random_chain_atoms(rng, int(rng.integers(60, 200)))
        vol = _sim_volume(rng, xyz, znum, box)
    if vol is None or vol.max() <= 0:
        return None
    pair = training_pair(augment(rng, vol, real=real))
    if pair is None:
        return None
    return pair[0], pair[1]


# ====================================================================== training
def train(
    cfg: TrainConfig, sources: Sources, out: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Train and write ``out`` (.safetensors) and its ``.json`` record; returns the record."""
    import safetensors.numpy
    import torch

    from neural_em.atomic import atomic_write_bytes, atomic_write_text

    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    net = build_net(cfg.channels, cfg.layers)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-5)
    pool: list[tuple[np.ndarray, np.ndarray]] = []
    t0 = time.perf_counter()
    while len(pool) < cfg.pool:
        v = make_volume(rng, sources, cfg)
        if v is not None:
            pool.append(v)
    logger.info("pool of %d volumes ready in %.1f s", len(pool), time.perf_counter() - t0)
    budget = cfg.minutes * 60.0
    history: list[dict[str, float]] = []
    step, last_save, running = 0, time.perf_counter(), None
    record: dict[str, Any] = {}
    margin = 2

    def save(final: bool) -> dict[str, Any]:
        state = state_to_numpy(net)
        rec = {
            "name": out.stem,
            "arch": {"channels": cfg.channels, "layers": cfg.layers},
            "parameters": int(sum(v.size for v in state.values())),
            "task": "refine the Fourier 2x upsampling of a map's even voxels towards the map",
            "config": dataclasses.asdict(cfg),
            "data": sources.used,
            "steps": step,
            "train_s": round(time.perf_counter() - t0, 1),
            "final": final,
            "threads": torch.get_num_threads(),
            "history": history,
        }
        atomic_write_bytes(
            out, safetensors.numpy.save(state, metadata={"name": out.stem}), overwrite=True
        )
        atomic_write_text(
            out.with_suffix(".json"), json.dumps(rec, indent=1) + "\n", overwrite=True
        )
        return rec

    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= budget or (cfg.max_steps is not None and step >= cfg.max_steps):
            break
        frac = min(1.0, elapsed / budget)
        if cfg.max_steps:
            frac = max(frac, step / cfg.max_steps)
        lr = cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        xs, ys, ms = [], [], []
        for _ in range(cfg.batch):
            inp, tgt = pool[rng.integers(len(pool))]
            dims = inp.shape[1:]
            p = [min(cfg.patch, n) for n in dims]
            lo = [int(rng.integers(0, n - q + 1)) for n, q in zip(dims, p, strict=True)]
            sl = (slice(None),) + tuple(slice(a, a + q) for a, q in zip(lo, p, strict=True))
            dst = (slice(None),) + tuple(slice(0, q) for q in p)
            x = np.zeros((IN_CHANNELS, cfg.patch, cfg.patch, cfg.patch), np.float32)
            y = np.zeros((8, cfg.patch, cfg.patch, cfg.patch), np.float32)
            m = np.zeros((1, cfg.patch, cfg.patch, cfg.patch), np.float32)
            x[dst] = inp[sl]
            y[dst] = tgt[sl]
            inner = [
                slice(margin if a > 0 else 0, q - margin if a + q < n else q - 1)
                for a, q, n in zip(lo, p, dims, strict=True)
            ]
            m[(0,) + tuple(inner)] = 1.0
            xs.append(x)
            ys.append(y)
            ms.append(m)
        x = torch.from_numpy(np.stack(xs))
        y = torch.from_numpy(np.stack(ys))
        m = torch.from_numpy(np.stack(ms))
        pred = x[:, 1:8] + net(x)
        # Charbonnier loss (L1 far from 0, quadratic near it): plain L1 collapses the output
        # to zero on the many empty voxels (measured: no progress in 300 steps).
        err = torch.sqrt((pred - y[:, 1:]) ** 2 + cfg.charbonnier_eps**2) - cfg.charbonnier_eps
        w = m * (0.1 + (torch.maximum(y[:, 1:], x[:, 1:8]) > 0.1).float())
        # Each patch's loss relative to Fourier's on it (plus the batch mean): the benchmark
        # reports the ratio per map, and patches with large errors (sharp, aliased) do not
        # dominate.
        wsum = w.sum(dim=(1, 2, 3, 4)).clamp_min(1.0)
        with torch.no_grad():
            e0 = torch.sqrt((x[:, 1:8] - y[:, 1:]) ** 2 + cfg.charbonnier_eps**2)
            base_i = ((e0 - cfg.charbonnier_eps) * w).sum(dim=(1, 2, 3, 4)) / wsum
        loss_i = (err * w).sum(dim=(1, 2, 3, 4)) / wsum
        # The batch's mean Fourier error floors each patch's: near-empty patches (tiny
        # Fourier error) would otherwise teach the network to output nothing (measured).
        loss = (loss_i / (base_i + base_i.mean())).mean() * 2.0
        base = torch.ones(())
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        ratio = float(loss.detach()) / max(float(base), 1e-9)
        running = ratio if running is None else 0.98 * running + 0.02 * ratio
        step += 1
        if step % cfg.refresh_every == 0:
            v = make_volume(rng, sources, cfg)
            if v is not None:
                pool[rng.integers(len(pool))] = v
        if step % 50 == 0:
            history.append(
                {
                    "step": step,
                    "s": round(time.perf_counter() - t0, 1),
                    "loss_over_fourier": round(running, 4),
                    "lr": lr,
                }
            )
            if progress:
                logger.info(
                    "step %d  %.0f s  loss/Fourier %.4f  lr %.2g",
                    step,
                    time.perf_counter() - t0,
                    running,
                    lr,
                )
        if time.perf_counter() - last_save > cfg.save_every_s:
            save(False)
            last_save = time.perf_counter()
    record = save(True)
    logger.info("wrote %s (%d steps, %.0f s)", out, step, time.perf_counter() - t0)
    return record


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python tools/learned_train.py",
        description="Train the learned field's network (writes NAME.safetensors + NAME.json).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="example: python tools/learned_train.py --data-dir ../shared/data "
        "--out learned.safetensors --minutes 30 --exclude emd_3488",
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder laid out as ../shared/data (real maps and their models); "
        "without it: random chains and --map/--model files only",
    )
    p.add_argument("--out", type=Path, required=True, help="output .safetensors file")
    p.add_argument(
        "--exclude",
        action="append",
        default=[],
        help=f"leave this map and its structure's models out (names: {', '.join(SHARED_MAPS)})",
    )
    p.add_argument("--map", action="append", type=Path, default=[], help="extra real map")
    p.add_argument(
        "--model",
        action="append",
        type=Path,
        default=[],
        help="extra model (PDB/mmCIF) to simulate maps from",
    )
    p.add_argument("--minutes", type=float, default=TrainConfig.minutes)
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=TrainConfig.batch)
    p.add_argument("--patch", type=int, default=TrainConfig.patch)
    p.add_argument("--pool", type=int, default=TrainConfig.pool)
    p.add_argument("--channels", type=int, default=TrainConfig.channels)
    p.add_argument("--layers", type=int, default=TrainConfig.layers)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--force", action="store_true", help="overwrite the output")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("neural_em.simulate").setLevel(logging.WARNING)
    if args.out.exists() and not args.force:
        p.error(f"{args.out} exists (pass --force to replace it)")
    import torch

    torch.set_num_threads(args.threads)
    cfg = TrainConfig(
        minutes=args.minutes,
        max_steps=args.max_steps,
        batch=args.batch,
        patch=args.patch,
        pool=args.pool,
        channels=args.channels,
        layers=args.layers,
        lr=args.lr,
        seed=args.seed,
    )
    try:
        sources = Sources(args.data_dir, args.exclude, extra_maps=args.map, extra_models=args.model)
    except ValueError as exc:
        p.error(str(exc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rec = train(cfg, sources, args.out)
    print(
        f"wrote {args.out} ({rec['steps']} steps, {rec['train_s']:.0f} s, "
        f"loss/Fourier {rec['history'][-1]['loss_over_fourier'] if rec['history'] else '-'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
