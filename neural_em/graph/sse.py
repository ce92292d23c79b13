"""Secondary structure read from a density field, without training (the backbone method's
helix and strand steps).

**Helices.** At 3.5 Å and worse an alpha-helix is a rod of density about 5-6 Å across whose
ridge runs along its axis; at better resolution a tube whose ridge follows the backbone's
spiral. Local features (density, Hessian eigenvalues) do not tell helix from other C-alphas;
a non-local one does. The field, sampled on a ``spacing_A`` grid and blurred by ``blur_A``,
is correlated with a zero-mean cylinder template (a core of radius ``core_A`` against a shell
from ``shell_A[0]`` to ``shell_A[1]``, over ``2 half_length_A`` of axis) in ``directions``
directions spread over a hemisphere (one FFT correlation each). The correlation is
*normalised* by the template's and the map's local spread (Pearson's r over the template's
support), so its scale is the same on every map. Each grid point keeps its best direction.

The decision is made per axis, not per point: grid points with a score ``>= low_score``,
highest across their best direction (a 1-voxel non-maximum suppression in the normal plane),
are candidate axis points; neighbours (within 2.2 voxels) whose directions agree within
``max_bend_deg`` and that follow each other along that direction are joined; a joined piece
needs three points ``>= min_score`` (hysteresis) and is cut where the rod thins to a single
chain (:func:`rod_fullness`: a single straight chain also correlates with a cylinder, but is
a thin line where a helix is a tube); each piece whose extent along its principal direction
reaches ``min_length_A`` (two turns of a helix, 8 residues, are 10.8 Å) is a helix axis, its
ends where the rod stops. The backbone method replaces the nodes along *strong* axes (mean
score ``>= 0.6``) that its nodes under-cover (:func:`axis_coverage`, :func:`axis_samples`,
:func:`replace_helix_nodes`) and labels nodes by :func:`node_labels`.

**Strands.** Backbone nodes outside helices on a straight stretch of chain with a parallel
stretch of another chain ``strand_gap_A`` (4.2-5.6 Å) beside it, for at least
``strand_min_nodes`` consecutive nodes: the flat sheet of strands 4.8 Å apart.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.sparse
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from neural_em.fields.base import DensityField
from neural_em.graph.mmcif import paths_of_edges
from neural_em.graph.seeds import field_volume
from neural_em.models import AtomicModel, ca_secondary_structure

logger = logging.getLogger(__name__)

#: Maps coarser than this (Å) are not labelled: a helix is no longer a rod apart from its
#: neighbours, and strands merge into sheets.
COARSEST_RESOLUTION_A = 6.0


@dataclasses.dataclass(frozen=True)
class HelixAxis:
    """One helix found in a map: ``points`` ``(k, 3)`` Å along the axis in order,
    ``direction`` ``(3,)`` unit vector (first to last point), ``length_A`` the extent along it
    and ``score`` the mean normalised correlation of its points."""

    points: np.ndarray
    direction: np.ndarray
    length_A: float
    score: float

    def ends(self) -> np.ndarray:
        """The axis's two ends ``(2, 3)`` Å: its first and last points projected on its
        line through their centroid."""
        centre = self.points.mean(axis=0)
        t = (self.points[[0, -1]] - centre) @ self.direction
        return centre + t[:, None] * self.direction

    def to_json(self) -> dict[str, object]:
        """Start, end (Å), length and score, as plain lists and floats."""
        start, end = self.ends()
        return {
            "start": [round(float(v), 3) for v in start],
            "end": [round(float(v), 3) for v in end],
            "length_A": round(float(self.length_A), 3),
            "score": round(float(self.score), 4),
        }


def hemisphere_directions(n: int) -> np.ndarray:
    """``n`` unit vectors ``(n, 3)`` spread evenly over the upper hemisphere (a Fibonacci
    spiral on the sphere, one of each antipodal pair kept)."""
    k = np.arange(2 * n) + 0.5
    polar = np.arccos(1.0 - k / n)
    azimuth = np.pi * (1.0 + 5.0**0.5) * k
    v = np.stack(
        [np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1
    )
    return v[v[:, 2] > 0][:n]


def cylinder_template(
    direction: np.ndarray,
    spacing_A: float,
    *,
    core_A: float,
    shell_A: tuple[float, float],
    half_length_A: float,
    subsamples: int = 3,
) -> tuple[np.ndarray, np.ndarray]:
    """Core and shell masks ``(m, m, m)`` (z, y, x, centred) of a cylinder along
    ``direction`` (x, y, z), each voxel's value the fraction of it inside (``subsamples``^3
    points per voxel)."""
    half = int(np.ceil(max(shell_A[1], half_length_A) / spacing_A))
    offsets = (np.arange(subsamples) + 0.5) / subsamples - 0.5
    axis = ((np.arange(-half, half + 1)[:, None] + offsets[None, :]).ravel()) * spacing_A
    zz, yy, xx = np.meshgrid(axis, axis, axis, indexing="ij")
    along = xx * direction[0] + yy * direction[1] + zz * direction[2]
    radial = np.sqrt(np.maximum(xx**2 + yy**2 + zz**2 - along**2, 0.0))
    inside = np.abs(along) <= half_length_A
    m, s = 2 * half + 1, subsamples
    core = (inside & (radial <= core_A)).reshape(m, s, m, s, m, s).mean(axis=(1, 3, 5))
    shell = (
        (inside & (radial >= shell_A[0]) & (radial <= shell_A[1]))
        .reshape(m, s, m, s, m, s)
        .mean(axis=(1, 3, 5))
    )
    return core, shell


def cylinder_scores(
    field: DensityField,
    *,
    spacing_A: float = 1.5,
    blur_A: float = 1.0,
    directions: int = 60,
    core_A: float = 3.0,
    shell_A: tuple[float, float] = (4.5, 7.0),
    half_length_A: float = 5.0,
    volume: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The normalised cylinder correlation of ``field`` (see the module docstring).

    Returns ``(score (nz, ny, nx) float32 in [-1, 1], best direction index (nz, ny, nx),
    directions (m, 3), grid origin (3,) Å)`` on a grid of ``spacing_A`` from the field's
    origin. ``volume``: :func:`~neural_em.graph.seeds.field_volume` of the field, where the
    caller has it (a neural field is evaluated on its grid once).
    """
    data, vs, origin = field_volume(field) if volume is None else volume
    sigma = np.sqrt(blur_A**2 + (0.5 * spacing_A) ** 2) / vs
    volume = scipy.ndimage.gaussian_filter(data, sigma=sigma[::-1], mode="constant")
    volume = scipy.ndimage.zoom(volume, (vs / spacing_A)[::-1], order=1).astype(np.float32)
    half = int(np.ceil(max(shell_A[1], half_length_A) / spacing_A))
    shape = [scipy.fft.next_fast_len(n + 2 * half + 1, real=True) for n in volume.shape]
    window = tuple(slice(half, half + n) for n in volume.shape)
    spectrum = scipy.fft.rfftn(volume, shape, workers=-1)
    spectrum_sq = scipy.fft.rfftn(volume * volume, shape, workers=-1)

    def correlate(f: np.ndarray, kernel: np.ndarray) -> np.ndarray:
        k = scipy.fft.rfftn(kernel[::-1, ::-1, ::-1].astype(np.float32), shape, workers=-1)
        return scipy.fft.irfftn(f * k, shape, workers=-1)[window]

    dirs = hemisphere_directions(directions)
    best = np.full(volume.shape, -np.inf, dtype=np.float32)
    best_dir = np.zeros(volume.shape, dtype=np.int16)
    for k, d in enumerate(dirs):
        core, shell = cylinder_template(
            d, spacing_A, core_A=core_A, shell_A=shell_A, half_length_A=half_length_A
        )
        template = core / core.sum() - shell / shell.sum()  # zero mean
        support = np.maximum(core, shell) > 0
        n = float(support.sum())
        t_norm = float(np.sqrt(np.sum(template[support] ** 2)))
        mask = support.astype(np.float64) / n
        mean = correlate(spectrum, mask)
        var = np.maximum(correlate(spectrum_sq, mask) - mean**2, 0.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = correlate(spectrum, template) / (t_norm * np.sqrt(var * n))
        r = np.nan_to_num(r, nan=-1.0, posinf=-1.0, neginf=-1.0).astype(np.float32)
        better = r > best
        best[better] = r[better]
        best_dir[better] = k
    return best, best_dir, dirs, np.asarray(origin, dtype=np.float64)


def _normal_basis(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors normal to each unit vector ``d`` (``(n, 3)`` or ``(3,)``) and to each
    other, shaped like ``d``."""
    d = np.asarray(d, dtype=np.float64)
    flat = d.reshape(-1, 3)
    helper = np.where(np.abs(flat[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    e1 = np.cross(flat, helper)
    e1 /= np.linalg.norm(e1, axis=1, keepdims=True)
    return e1.reshape(d.shape), np.cross(flat, e1).reshape(d.shape)


def helix_axes(
    field: DensityField,
    *,
    min_score: float = 0.5,
    low_score: float = 0.45,
    min_length_A: float = 10.0,
    min_fullness: float = 0.4,
    max_bend_deg: float = 25.0,
    spacing_A: float = 1.5,
    blur_A: float = 1.0,
    directions: int = 60,
    volume: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
) -> list[HelixAxis]:
    """The helix axes of ``field`` (see the module docstring), longest first; an axis whose
    rod is not full (:func:`rod_fullness` below ``min_fullness``: a single chain) is cut
    there."""
    score, best_dir, dirs, origin = cylinder_scores(
        field, spacing_A=spacing_A, blur_A=blur_A, directions=directions, volume=volume
    )
    cand = np.argwhere(score >= low_score)  # (k, 3) z, y, x
    if len(cand) < 3:
        return []
    d = dirs[best_dir[tuple(cand.T)]]
    value = score[tuple(cand.T)]
    e1, e2 = _normal_basis(d)
    peak = np.ones(len(cand), dtype=bool)
    for e in (e1, e2):
        for sign in (1.0, -1.0):
            q = cand + sign * e[:, ::-1]
            peak &= value >= scipy.ndimage.map_coordinates(
                score, q.T, order=1, mode="constant", cval=-1.0
            )
    cand, d, value = cand[peak], d[peak], value[peak]
    if len(cand) < 3:
        return []
    pts = origin + cand[:, ::-1] * spacing_A
    pairs = cKDTree(pts).query_pairs(2.2 * spacing_A, output_type="ndarray")
    if len(pairs) == 0:
        return []
    i, j = pairs[:, 0], pairs[:, 1]
    cos = np.sum(d[i] * d[j], axis=1)
    mean_dir = d[i] * np.sign(cos)[:, None] + d[j]
    mean_dir /= np.linalg.norm(mean_dir, axis=1, keepdims=True)
    step = pts[j] - pts[i]
    along = np.abs(np.sum(step * mean_dir, axis=1)) >= 0.6 * np.linalg.norm(step, axis=1)
    keep = (np.abs(cos) >= np.cos(np.radians(max_bend_deg))) & along
    adjacency = scipy.sparse.coo_matrix(
        (np.ones(int(keep.sum())), (i[keep], j[keep])), shape=(len(pts), len(pts))
    )
    n_pieces, piece = connected_components(adjacency, directed=False)
    axes = []
    for c in range(n_pieces):
        members = np.flatnonzero(piece == c)
        if len(members) < 3 or np.count_nonzero(value[members] >= min_score) < 3:
            continue
        axis = _axis_of(pts[members], value[members])
        if axis.length_A < min_length_A:
            continue
        # The rod stops where it thins to a single chain: split the piece there.
        order = members[np.argsort((pts[members] - axis.points[0]) @ axis.direction)]
        full = rod_fullness(field, pts[order], axis.direction) >= min_fullness
        full = scipy.ndimage.binary_closing(full, iterations=1) | full
        runs, count = scipy.ndimage.label(full)
        for r in range(1, count + 1):
            run = order[runs == r]
            if len(run) < 3 or np.count_nonzero(value[run] >= min_score) < 3:
                continue
            part = _axis_of(pts[run], value[run])
            if part.length_A >= min_length_A:
                axes.append(part)
    axes.sort(key=lambda a: -a.length_A)
    return axes


def rod_fullness(
    field: DensityField,
    points: np.ndarray,
    direction: np.ndarray,
    *,
    radius_A: float = 2.5,
    half_length_A: float = 2.7,
    angles: int = 12,
    quantile: float = 25.0,
) -> np.ndarray:
    """How full the rod along ``direction`` is at each of ``points`` ``(k, 3)`` Å: a low
    ``quantile`` over ``angles`` directions of the field's mean density at ``radius_A`` from
    the line, within ``half_length_A`` along it, over the mean density on the line there
    ``(k,)``. A helix is a tube whose backbone passes every direction at 2.3 Å within one
    5.4 Å turn (about 1, or above where the map resolves it hollow); a single chain is a thin
    line (about 0.2-0.4 at 3-4.5 Å), with side chains in only a few directions."""
    d = np.asarray(direction, dtype=np.float64)
    e1, e2 = _normal_basis(d)
    theta = np.linspace(0.0, 2.0 * np.pi, angles, endpoint=False)
    ring = radius_A * (np.cos(theta)[:, None] * e1 + np.sin(theta)[:, None] * e2)  # (a, 3)
    along = np.linspace(-half_length_A, half_length_A, 7)[:, None] * d  # (l, 3)
    line = points[:, None, :] + along[None]  # (k, l, 3)
    rim = line[:, :, None, :] + ring[None, None]  # (k, l, a, 3)
    core = np.nan_to_num(field.get_densities(line.reshape(-1, 3)).reshape(line.shape[:2]))
    shell = np.nan_to_num(field.get_densities(rim.reshape(-1, 3)).reshape(rim.shape[:3]))
    low = np.percentile(shell.mean(axis=1), quantile, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = low / core.mean(axis=1)
    return np.where(np.isfinite(ratio), ratio, 0.0)


def _axis_of(points: np.ndarray, value: np.ndarray) -> HelixAxis:
    centre = points.mean(axis=0)
    direction = np.linalg.svd(points - centre, full_matrices=False)[2][0]
    t = (points - centre) @ direction
    order = np.argsort(t, kind="stable")
    return HelixAxis(
        points=points[order],
        direction=direction,
        length_A=float(t.max() - t.min()),
        score=float(value.mean()),
    )


def axis_distance(
    points: np.ndarray, axes: list[HelixAxis], *, end_margin_A: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """Distance ``(n,)`` Å of each of ``points`` ``(n, 3)`` to the nearest helix axis
    (to its nearest axis point, counted only between its ends extended by
    ``end_margin_A``; inf elsewhere) and that axis's index (-1 where none)."""
    n = len(points)
    dist = np.full(n, np.inf)
    which = np.full(n, -1, dtype=np.int64)
    for k, axis in enumerate(axes):
        d, _ = cKDTree(axis.points).query(points)
        t = (points - axis.points[0]) @ axis.direction
        inside = (t >= -end_margin_A) & (t <= axis.length_A + end_margin_A)
        d = np.where(inside, d, np.inf)
        closer = d < dist
        dist[closer], which[closer] = d[closer], k
    return dist, which


def axis_samples(
    field: DensityField, axis: HelixAxis, *, rise_A: float = 1.5, disc_A: float = 3.0
) -> np.ndarray:
    """Points ``(k, 3)`` Å every ``rise_A`` along ``axis`` (a residue's rise in an
    alpha-helix) from end to end: the axis points smoothed by a quadratic in the distance
    along it, then each sample moved to the density's centroid in the disc of ``disc_A``
    normal to the axis (twice), which centres it on the rod better than the 1.5 Å grid."""
    p, d = axis.points, axis.direction
    t = (p - p[0]) @ d
    degree = 2 if len(p) > 4 else 1
    coef = [np.polyfit(t, p[:, k], degree) for k in range(3)]
    count = max(int(round((t[-1] - t[0]) / rise_A)), 1)
    ts = np.linspace(t[0], t[-1], count + 1)
    samples = np.stack([np.polyval(c, ts) for c in coef], axis=1)
    e1, e2 = _normal_basis(d)
    grid = np.arange(-disc_A, disc_A + 1e-9, 0.5)
    u, v = np.meshgrid(grid, grid, indexing="ij")
    inside = u**2 + v**2 <= disc_A**2
    offsets = u[inside][:, None] * e1 + v[inside][:, None] * e2  # (m, 3)
    for _ in range(2):
        disc = samples[:, None, :] + offsets[None]
        w = np.nan_to_num(field.get_densities(disc.reshape(-1, 3)).reshape(disc.shape[:2]))
        w = np.maximum(w, 0.0)
        total = w.sum(axis=1, keepdims=True)
        shift = np.where(total > 0, (w @ offsets) / np.maximum(total, 1e-12), 0.0)
        samples = samples + shift
    return samples


def axis_coverage(positions: np.ndarray, axis: HelixAxis, *, radius_A: float = 3.5) -> float:
    """Nodes within ``radius_A`` of ``axis`` (between its ends) per residue the axis holds
    (its length / 1.5 Å + 1): about 1 where the nodes follow a resolved helix's backbone,
    about half where they sit every 3-3.6 Å on a ridge along its axis."""
    dist, _ = axis_distance(positions, [axis], end_margin_A=0.0)
    return float(np.count_nonzero(dist <= radius_A)) / (axis.length_A / 1.5 + 1.0)


def replace_helix_nodes(
    positions: np.ndarray,
    edges: np.ndarray,
    replacements: list[np.ndarray],
    axes: list[HelixAxis],
    *,
    radius_A: float = 3.5,
    join_A: float = 7.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nodes and edges with the nodes within ``radius_A`` of each of ``axes`` (between its
    ends) replaced by that axis's ``replacements`` ``(k_i, 3)`` joined in order; each node
    that was joined to a removed one is joined to the nearer end of the helix within
    ``join_A``. Returns ``(positions (n', 3), edges (m', 2), kept (k,))``: the nodes kept
    (indices into ``positions``) come first, in order, the helices' after them."""
    n = len(positions)
    removed = np.zeros(n, dtype=bool)
    for axis in axes:
        dist, _ = axis_distance(positions, [axis], end_margin_A=0.75)
        removed |= dist <= radius_A
    attached = set()
    for a, b in edges:
        if removed[a] != removed[b]:
            attached.add(int(b) if removed[a] else int(a))
    kept = np.flatnonzero(~removed)
    index = np.full(n, -1, dtype=np.int64)
    index[kept] = np.arange(len(kept))
    out_edges = [tuple(e) for e in index[edges] if e[0] >= 0 and e[1] >= 0] if len(edges) else []
    out_pos = [positions[kept]]
    start = len(kept)
    ends = []
    for samples in replacements:
        k = len(samples)
        out_pos.append(samples)
        out_edges += [(start + i, start + i + 1) for i in range(k - 1)]
        ends += [start, start + k - 1]
        start += k
    all_pos = np.concatenate(out_pos) if out_pos else np.zeros((0, 3))
    if ends and attached:
        end_arr = np.array(ends)
        for a in sorted(attached):
            gap = np.linalg.norm(all_pos[end_arr] - positions[a], axis=1)
            k = int(np.argmin(gap))
            if gap[k] <= join_A:
                out_edges.append((int(index[a]), int(end_arr[k])))
    pairs = np.array(sorted({(min(a, b), max(a, b)) for a, b in out_edges}), dtype=np.int64)
    return all_pos, pairs.reshape(-1, 2), kept


def strand_mask(
    positions: np.ndarray,
    edges: np.ndarray,
    candidate: np.ndarray,
    *,
    gap_A: tuple[float, float] = (4.2, 5.6),
    min_cos: float = 0.75,
    min_nodes: int = 3,
) -> np.ndarray:
    """Nodes ``(n,) bool`` in strands: among ``candidate`` nodes of degree 2 on a straight
    stretch (the angle at the node above 120 degrees), those with a candidate node of another
    stretch ``gap_A`` away beside them (offset across, tangents parallel within
    ``|cos| >= min_cos``), in runs of at least ``min_nodes`` consecutive such nodes."""
    n = len(positions)
    out = np.zeros(n, dtype=bool)
    if n < 3 or len(edges) == 0:
        return out
    neighbours: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        neighbours[int(a)].append(int(b))
        neighbours[int(b)].append(int(a))
    tangent = np.zeros((n, 3))
    straight = np.zeros(n, dtype=bool)
    for k in range(n):
        if len(neighbours[k]) != 2 or not candidate[k]:
            continue
        a, b = positions[neighbours[k][0]], positions[neighbours[k][1]]
        u, v = a - positions[k], b - positions[k]
        cos = u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-9)
        straight[k] = cos <= -0.5
        tangent[k] = (b - a) / max(np.linalg.norm(b - a), 1e-9)
    idx = np.flatnonzero(straight)
    if len(idx) < 2:
        return out
    tree = cKDTree(positions[idx])
    paired = np.zeros(n, dtype=bool)
    for i, j in tree.query_pairs(gap_A[1], output_type="ndarray"):
        a, b = idx[i], idx[j]
        offset = positions[b] - positions[a]
        dist = float(np.linalg.norm(offset))
        if dist < gap_A[0] or b in neighbours[a]:
            continue
        if abs(tangent[a] @ tangent[b]) < min_cos:
            continue
        across = abs(offset @ tangent[a]) / dist <= 0.5
        if across:
            paired[a] = paired[b] = True
    # Runs of consecutive paired nodes along the chain.
    adjacency = scipy.sparse.coo_matrix(
        (np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)
    ).tocsr()
    sub = adjacency[paired][:, paired]
    members = np.flatnonzero(paired)
    _, run = connected_components(sub, directed=False)
    sizes = np.bincount(run) if len(run) else np.zeros(0, dtype=np.int64)
    out[members[sizes[run] >= min_nodes]] = True
    return out


def node_labels(
    positions: np.ndarray,
    edges: np.ndarray,
    axes: list[HelixAxis],
    *,
    helix_radius_A: float = 3.0,
    strong_score: float = 0.6,
    end_trim_A: float = 1.0,
    strands: bool = True,
) -> np.ndarray:
    """Labels ``(n,)`` of :data:`~neural_em.models.SSE_CLASSES` for nodes ``(n, 3)`` Å
    joined by ``edges`` ``(m, 2)``. ``helix``: within ``helix_radius_A`` of a strong axis (score ``>=
    strong_score``; its ends trimmed by ``end_trim_A``); or near a weaker axis where the path
    winds around it (:func:`winding_mask`: a resolved helix, hollow, correlates less with a
    full cylinder); or a helix by P-SEA on the graph's own paths
    (:func:`trace_geometry`). ``strand``: among the others, strands by P-SEA on the paths or
    by :func:`strand_mask`. ``coil`` elsewhere."""
    n = len(positions)
    labels = np.full(n, "coil", dtype="<U6")
    if n == 0:
        return labels
    traced = trace_geometry(positions, edges)
    strong_axes = [a for a in axes if a.score >= strong_score]
    weak_axes = [a for a in axes if a.score < strong_score]
    near_strong = (
        axis_distance(positions, strong_axes, end_margin_A=-end_trim_A)[0] <= helix_radius_A
    )
    near_weak = axis_distance(positions, weak_axes, end_margin_A=-end_trim_A)[0] <= helix_radius_A
    helix = (
        near_strong
        | (near_weak & winding_mask(positions, edges, axes=weak_axes))
        | (traced == "helix")
    )
    labels[helix] = "helix"
    if strands:
        labels[~helix & ((traced == "strand") | strand_mask(positions, edges, ~helix))] = "strand"
    return labels


def winding_mask(
    positions: np.ndarray,
    edges: np.ndarray,
    *,
    window: int = 5,
    radius_A: tuple[float, float] = (1.4, 3.2),
    min_winding: float = 1.8,
    extent_A: tuple[float, float] = (4.0, 14.0),
    axes: list[HelixAxis] | None = None,
    axis_offset_A: float = 1.5,
    min_cos: float = 0.8,
) -> np.ndarray:
    """Nodes ``(n,) bool`` on a stretch of path that winds around a straight axis as a
    resolved helix's backbone does: in some window of ``window`` consecutive nodes of a path,
    their median distance from their best line lies in ``radius_A`` (a helix's C-alphas are
    2.3 Å from its axis), the path is at least ``min_winding`` times longer than their extent
    along the line (3.8 Å per residue against a rise of 1.5 Å) and that extent lies in
    ``extent_A``. Tolerates a node more or less per turn, unlike P-SEA. With ``axes``, the
    window's line must also be one of them: its centre within ``axis_offset_A`` of the axis,
    its direction parallel (``|cos| >= min_cos``)."""
    members, centres, lines = [], [], []
    for path in paths_of_edges(len(positions), edges):
        if len(path) < window:
            continue
        p = positions[path]
        for s in range(len(path) - window + 1):
            q = p[s : s + window]
            centred = q - q.mean(axis=0)
            line = np.linalg.svd(centred, full_matrices=False)[2][0]
            t = centred @ line
            r = np.linalg.norm(centred - t[:, None] * line, axis=1)
            extent = float(t.max() - t.min())
            arc = float(np.linalg.norm(np.diff(q, axis=0), axis=1).sum())
            if (
                radius_A[0] <= np.median(r) <= radius_A[1]
                and extent_A[0] <= extent <= extent_A[1]
                and arc >= min_winding * extent
            ):
                members.append(path[s : s + window])
                centres.append(q.mean(axis=0))
                lines.append(line)
    keep = np.ones(len(members), dtype=bool)
    if axes is not None and members:
        # The window's line must be one of the axes: all windows against all axes at once.
        dist, which = axis_distance(np.array(centres), axes, end_margin_A=0.0)
        along = np.array([axes[w].direction if w >= 0 else np.zeros(3) for w in which])
        cos = np.abs(np.sum(np.array(lines) * along, axis=1))
        keep = (dist <= axis_offset_A) & (cos >= min_cos)
    out = np.zeros(len(positions), dtype=bool)
    for window_nodes, kept in zip(members, keep, strict=True):
        if kept:
            out[np.asarray(window_nodes)] = True
    return out


def trace_geometry(positions: np.ndarray, edges: np.ndarray, *, min_nodes: int = 5) -> np.ndarray:
    """P-SEA (:func:`~neural_em.models.ca_secondary_structure`) on the graph's own paths
    (:func:`~neural_em.graph.mmcif.paths_of_edges`, at least ``min_nodes`` nodes), read as
    C-alpha traces: where the map resolves the backbone the nodes sit on C-alphas and their
    geometry (distances and angles between nodes i..i+4) shows helices and strands. Labels
    ``(n,)``; ``coil`` on shorter paths."""
    labels = np.full(len(positions), "coil", dtype="<U6")
    paths = [p for p in paths_of_edges(len(positions), edges) if len(p) >= min_nodes]
    if not paths:
        return labels
    order = np.concatenate(paths)
    names = [f"{c}/{k + 1}" for c, p in enumerate(paths) for k in range(len(p))]
    trace = AtomicModel(ca=positions[order], ca_labels=names, heavy=np.zeros((0, 3)))
    labels[order] = ca_secondary_structure(trace)
    return labels
