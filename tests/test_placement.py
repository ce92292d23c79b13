"""Node placement along a ridge forest: segments, curvature, the spacing programme, anchors,
suppression of close nodes, and stub pruning that keeps the ends of chains."""

from __future__ import annotations

import numpy as np
import pytest

from neural_em.graph.forest import forest_segments, prune_stubs
from neural_em.graph.placement import (
    anchor_weights,
    place_nodes,
    ridge_curvature,
    segment_nodes,
    suppress_close,
)


def line(n: int, step: float = 0.3, start=(0.0, 0.0, 0.0), direction=(1.0, 0.0, 0.0)):
    d = np.asarray(direction, dtype=float)
    return np.asarray(start, dtype=float) + step * np.arange(n)[:, None] * d / np.linalg.norm(d)


def path_adjacency(n: int, offset: int = 0) -> list[set[int]]:
    return [{offset + j for j in (i - 1, i + 1) if 0 <= j < n} for i in range(n)]


def test_segments_split_a_forest_at_its_branch_points():
    # A T: a straight path of 11 points and a branch of 4 from its middle (point 5).
    adj = path_adjacency(11) + [set() for _ in range(4)]
    chain = [5, 11, 12, 13, 14]
    for a, b in zip(chain[:-1], chain[1:], strict=True):
        adj[a].add(b)
        adj[b].add(a)
    segments, breaks = forest_segments(adj, np.ones(15, dtype=bool))
    assert sorted(np.flatnonzero(breaks).tolist()) == [0, 5, 10, 14]
    assert sorted(sorted(s) for s in segments) == [
        [0, 1, 2, 3, 4, 5],
        [5, 6, 7, 8, 9, 10],
        [5, 11, 12, 13, 14],
    ]


def test_curvature_of_a_circle_and_a_line():
    t = np.linspace(0, 2 * np.pi, 400)
    circle = np.stack([2.5 * np.cos(t), 2.5 * np.sin(t), np.zeros_like(t)], axis=1)
    kappa = ridge_curvature(circle, 1.6)
    assert np.allclose(kappa[50:-50], 1 / 2.5, rtol=1e-3)
    assert np.allclose(ridge_curvature(line(50), 1.6), 0.0, atol=1e-12)


def test_spacing_programme_places_even_nodes_and_prefers_anchors():
    points = line(61, 0.25)  # 15 Å
    nodes = segment_nodes(points, np.zeros(61), spacing_A=3.75, min_A=2.0, max_A=4.6, penalty=1.0)
    np.testing.assert_array_equal(nodes, [0, 15, 30, 45, 60])  # 3.75 Å apart exactly
    # An anchor 0.5 Å off the even position pulls its node onto it; the spacing pays for it.
    weights = np.zeros(61)
    weights[17] = 2.0
    nodes = segment_nodes(points, weights, spacing_A=3.75, min_A=2.0, max_A=4.6, penalty=1.0)
    assert 17 in nodes and nodes[0] == 0 and nodes[-1] == 60
    chords = np.diff(nodes) * 0.25
    assert chords.min() >= 2.0 and chords.max() <= 4.6
    # An anchor too close to an end to satisfy min_A is not taken.
    weights = np.zeros(61)
    weights[4] = 5.0  # 1 Å from the forced end
    assert 4 not in segment_nodes(
        points, weights, spacing_A=3.75, min_A=2.0, max_A=4.6, penalty=1.0
    )


def test_a_gap_longer_than_max_is_still_crossed():
    points = np.concatenate([line(5, 0.3), line(5, 0.3, start=(8.0, 0, 0))])
    nodes = segment_nodes(points, np.zeros(10), spacing_A=3.6, min_A=2.0, max_A=4.6, penalty=1.0)
    assert nodes[0] == 0 and nodes[-1] == 9


def test_curved_ridges_get_closer_nodes():
    # The same 30 Å of ridge straight, and wound on a spiral of radius 1.5 Å (curvature 0.5/Å).
    straight = line(121, 0.25)
    t = np.linspace(0, 30 / np.hypot(1.5, 0.86), 121)
    spiral = np.stack([1.5 * np.cos(t), 1.5 * np.sin(t), 0.86 * t], axis=1)
    counts = []
    for pts in (straight, spiral):
        n = len(pts)
        nodes = place_nodes(
            pts,
            path_adjacency(n),
            np.ones(n, dtype=bool),
            np.zeros(n),
            spacing_A=3.6,
            curved_spacing_A=2.4,
            curvature=(0.15, 0.3),
            min_A=2.0,
            max_A=4.6,
            penalty=1.0,
            separation_A=1.5,
        )
        counts.append(len(nodes))
    arc = np.linalg.norm(np.diff(spiral, axis=0), axis=1).sum()
    assert counts[0] == 9  # 30 Å / 3.6 Å, rounded, plus the first node
    assert counts[1] > counts[0]  # 2.4 Å chords on the spiral
    assert arc == pytest.approx(30.0, rel=1e-3)


def test_anchor_weights_and_suppression():
    points = line(10, 1.0)
    w = anchor_weights(points, np.array([[3.0, 0.0, 0.0]]), sigma_A=0.7, weight=2.0)
    assert w[3] == pytest.approx(2.0) and w[4] == pytest.approx(2.0 * np.exp(-0.5 / 0.49))
    assert np.all(anchor_weights(points, np.zeros((0, 3)), sigma_A=0.7, weight=1.0) == 0)
    kept = suppress_close(points, np.array([2, 3, 4, 8]), w, 1.5)
    np.testing.assert_array_equal(kept, [3, 8])  # 2 and 4 lie within 1.5 Å of the anchor


def test_weak_stubs_pruned_but_a_chain_end_keeps_its_last_stretch():
    # Backbone along x (score 1), a 4 Å side chain off point 10 (score 0.5), and at the end
    # (point 20) a fading 4 Å terminal stretch (0.6) beside a 4 Å side chain (0.5).
    backbone = line(21, 0.5)
    side_a = line(8, 0.5, start=(5.0, 0.5, 0.0), direction=(0, 1, 0))
    end_stretch = line(8, 0.5, start=(10.5, 0.0, 0.0))
    side_b = line(8, 0.5, start=(10.0, 0.5, 0.0), direction=(0, 1, 0))
    points = np.concatenate([backbone, side_a, end_stretch, side_b])
    adj = path_adjacency(21) + path_adjacency(8, 21) + path_adjacency(8, 29) + path_adjacency(8, 37)
    for a, b in ((10, 21), (20, 29), (20, 37)):
        adj[a].add(b)
        adj[b].add(a)
    score = np.concatenate([np.ones(21), np.full(8, 0.5), np.full(8, 0.6), np.full(8, 0.5)])
    neighbours = [sorted(a) for a in adj]
    # Length alone (3 Å) keeps all three 4 Å branches.
    alive, _ = prune_stubs(points, neighbours, 3.0)
    assert alive.all()
    alive, adj_out = prune_stubs(
        points, neighbours, 3.0, score=score, weak_length_A=5.0, weak_ratio=0.9
    )
    assert not alive[21:29].any()  # the side chain off the middle
    assert not alive[37:].any()  # the weaker of the two branches at the end
    assert alive[29:37].all()  # the chain's last stretch
    assert all(len(a) <= 2 for a in adj_out)
