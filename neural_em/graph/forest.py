"""The ridge forest of the backbone method (step 3): ridge points merged, joined by their
minimum spanning forest, side-chain stubs pruned; and its edges (step 5): nodes joined where
their cells on the forest touch, path ends bridged across short gaps of density."""

from __future__ import annotations

import numpy as np
import scipy.sparse
from scipy.sparse.csgraph import connected_components, dijkstra, minimum_spanning_tree
from scipy.spatial import cKDTree

from neural_em.fields.base import DensityField


def merge_points(
    points: np.ndarray, weights: np.ndarray, cell_A: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mean position ``(k, 3)`` and mean weights (``(k,)``, or ``(k, m)`` for weights
    ``(n, m)``) of the points in each occupied cube of side ``cell_A`` (ridge points
    projected from neighbouring grid points coincide)."""
    weights = np.asarray(weights, dtype=np.float64)
    if len(points) == 0:
        return points.reshape(0, 3), weights.reshape((0, *weights.shape[1:]))
    key = np.floor(points / cell_A).astype(np.int64)
    _, inverse, counts = np.unique(key, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    k = len(counts)
    merged = (
        np.stack(
            [np.bincount(inverse, weights=points[:, d], minlength=k) for d in range(3)], axis=1
        )
        / counts[:, None]
    )
    if weights.ndim == 1:
        return merged, np.bincount(inverse, weights=weights, minlength=k) / counts
    return merged, np.stack(
        [np.bincount(inverse, weights=weights[:, j], minlength=k) for j in range(weights.shape[1])],
        axis=1,
    ) / counts[:, None]


def ridge_forest(points: np.ndarray, link_A: float) -> scipy.sparse.csr_matrix:
    """Symmetric ``(n, n)`` adjacency (edge lengths, Å) of the minimum spanning forest of the
    pairs of points closer than ``link_A``."""
    n = len(points)
    pairs = (
        cKDTree(points).query_pairs(link_A, output_type="ndarray")
        if n > 1
        else np.zeros((0, 2), dtype=np.int64)
    )
    lengths = np.linalg.norm(points[pairs[:, 0]] - points[pairs[:, 1]], axis=1) + 1e-9
    graph = scipy.sparse.coo_matrix((lengths, (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    forest = minimum_spanning_tree(graph.tocsr())
    return (forest + forest.T).tocsr()


def neighbours_of(adjacency: scipy.sparse.csr_matrix) -> list[list[int]]:
    """The neighbours of each point of a symmetric ``(n, n)`` adjacency, as lists."""
    a = adjacency.tocsr()
    return [a.indices[a.indptr[i] : a.indptr[i + 1]].tolist() for i in range(a.shape[0])]


def forest_segments(adj: list[set[int]], alive: np.ndarray) -> tuple[list[list[int]], np.ndarray]:
    """The unbranched segments of a forest (lists of point indices, both ends included, from
    one break point to the next) and its break points ``(n,) bool`` (alive, degree != 2)."""
    degree = np.array([len(a) for a in adj], dtype=np.int64)
    breaks = np.asarray(alive, dtype=bool) & (degree != 2)
    seen: set[tuple[int, int]] = set()
    segments = []
    for start in np.flatnonzero(breaks):
        for first in adj[start]:
            if (int(start), first) in seen:
                continue
            path, prev, cur = [int(start), int(first)], int(start), int(first)
            seen.update({(prev, cur), (cur, prev)})
            while not breaks[cur]:
                nxt = next(x for x in adj[cur] if x != prev)
                seen.update({(cur, nxt), (nxt, cur)})
                path.append(int(nxt))
                prev, cur = cur, nxt
            segments.append(path)
    return segments, breaks


def _stubs(
    points: np.ndarray, adj: list[set[int]], alive: np.ndarray
) -> list[tuple[list[int], int, float]]:
    """The terminal branches of a forest, by leaf index: (points from the leaf inwards,
    junction, length Å) for every segment (:func:`forest_segments`) from a leaf to a junction
    (degree >= 3)."""
    out = []
    for segment in forest_segments(adj, alive)[0]:
        if len(adj[segment[0]]) == 1 and len(adj[segment[-1]]) >= 3:
            path = segment
        elif len(adj[segment[-1]]) == 1 and len(adj[segment[0]]) >= 3:
            path = segment[::-1]
        else:
            continue
        length = 0.0
        for u, v in zip(path[:-1], path[1:], strict=True):
            length += float(np.linalg.norm(points[v] - points[u]))
        out.append((path[:-1], path[-1], length))
    return sorted(out, key=lambda stub: stub[0][0])


def _cut(path: list[int], adj: list[set[int]], alive: np.ndarray) -> None:
    for v in path:
        alive[v] = False
        for u in adj[v]:
            adj[u].discard(v)
        adj[v] = set()


def prune_stubs(
    points: np.ndarray,
    neighbours: list[list[int]],
    min_length_A: float,
    *,
    score: np.ndarray | None = None,
    weak_length_A: float = 0.0,
    weak_ratio: float = 0.0,
) -> tuple[np.ndarray, list[set[int]]]:
    """Remove side-chain stubs from a forest. First the terminal branches (leaf to junction)
    shorter than ``min_length_A``, repeatedly until none is left; then, once, those shorter
    than ``weak_length_A`` whose mean ``score`` ``(n,)`` is below ``weak_ratio`` x the score
    at their junction (a side chain is weaker than the backbone it leaves), weakest first and
    never more than leaves the junction a path through it (so the end of a chain, whose
    density fades too, keeps its last stretch). Returns ``(kept (n,) bool, neighbour sets)``;
    isolated paths (no junction) are kept whatever their length."""
    adj = [set(nb) for nb in neighbours]
    alive = np.ones(len(points), dtype=bool)
    changed = True
    while changed:
        changed = False
        for path, junction, length in _stubs(points, adj, alive):
            if length < min_length_A and len(adj[junction]) >= 3:
                _cut(path, adj, alive)
                changed = True
    if score is None or weak_length_A <= 0:
        return alive, adj
    weak = [
        (float(np.mean(score[path])), path, junction)
        for path, junction, length in _stubs(points, adj, alive)
        if length < weak_length_A and np.mean(score[path]) < weak_ratio * score[junction]
    ]
    for _, path, junction in sorted(weak, key=lambda w: w[0]):
        if len(adj[junction]) >= 3:
            _cut(path, adj, alive)
    return alive, adj


# ---------------------------------------------------------------------------- edges
def forest_edges(points: np.ndarray, adj: list[set[int]], nodes: np.ndarray) -> np.ndarray:
    """Edges ``(m, 2)`` (positions in ``nodes``, ``i < j``, sorted) between nodes whose
    geodesic Voronoi cells on the forest touch."""
    n = len(points)
    rows = [v for v in range(n) for u in adj[v] if u > v]
    cols = [u for v in range(n) for u in adj[v] if u > v]
    if not rows or len(nodes) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    rows_a, cols_a = np.array(rows), np.array(cols)
    lengths = np.linalg.norm(points[rows_a] - points[cols_a], axis=1) + 1e-9
    graph = scipy.sparse.coo_matrix((lengths, (rows_a, cols_a)), shape=(n, n)).tocsr()
    _, _, source = dijkstra(
        graph, directed=False, indices=nodes, min_only=True, return_predecessors=True
    )
    position = np.full(n, -1, dtype=np.int64)
    position[nodes] = np.arange(len(nodes))
    a, b = source[rows_a], source[cols_a]
    touch = (a >= 0) & (b >= 0) & (a != b)
    pairs = np.sort(np.stack([position[a[touch]], position[b[touch]]], axis=1), axis=1)
    pairs = np.unique(pairs, axis=0) if len(pairs) else pairs.reshape(0, 2)
    return pairs.astype(np.int64)


def bridge_gaps(
    positions: np.ndarray,
    edges: np.ndarray,
    field: DensityField,
    *,
    max_gap_A: float,
    min_density: float,
    min_gap_A: float = 2.4,
    samples: int = 7,
) -> np.ndarray:
    """Join path ends (degree <= 1) to a node of degree <= 1 of another piece within
    ``max_gap_A`` when the field stays ``>= min_density`` along the segment (``samples``
    interior points); shortest gaps first, never closing a cycle. Returns all edges."""
    n = len(positions)
    if n < 2:
        return edges
    degree = np.bincount(edges.ravel(), minlength=n)
    adjacency = scipy.sparse.coo_matrix(
        (np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)
    )
    _, label = connected_components(adjacency, directed=False)
    ends = np.flatnonzero(degree <= 1)
    if len(ends) < 2:
        return edges
    tree = cKDTree(positions[ends])
    pairs = tree.query_pairs(max_gap_A, output_type="ndarray")
    if len(pairs) == 0:
        return edges
    a, b = ends[pairs[:, 0]], ends[pairs[:, 1]]
    gap = np.linalg.norm(positions[a] - positions[b], axis=1)
    keep = (label[a] != label[b]) & (gap >= min_gap_A)
    a, b, gap = a[keep], b[keep], gap[keep]
    t = np.linspace(0.0, 1.0, samples + 2)[1:-1]
    segment = positions[a][:, None] + t[None, :, None] * (positions[b] - positions[a])[:, None]
    dens = field.get_densities(segment.reshape(-1, 3)).reshape(len(a), samples)
    ok = np.all(np.nan_to_num(dens, nan=-np.inf) >= min_density, axis=1)
    parent = np.arange(label.max() + 1 if n else 0)

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    added = []
    for k in np.flatnonzero(ok)[np.argsort(gap[ok], kind="stable")]:
        i, j = int(a[k]), int(b[k])
        if degree[i] > 1 or degree[j] > 1:
            continue
        ri, rj = find(label[i]), find(label[j])
        if ri == rj:
            continue
        parent[ri] = rj
        degree[i] += 1
        degree[j] += 1
        added.append((min(i, j), max(i, j)))
    if not added:
        return edges
    out = np.concatenate([edges, np.array(added, dtype=np.int64)])
    return np.unique(out, axis=0)
