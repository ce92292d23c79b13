"""Point labels of the figures do not overlap (pipeline.labels.place_labels), measured on the
rendered text, not on the placement's own estimate."""

from __future__ import annotations

import itertools

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.text import Text  # noqa: E402

from neural_em.pipeline.labels import place_labels  # noqa: E402

#: Four entries of a local run whose labels overlapped in the training-time figure.
POINTS = [(2.1e5, 61.0), (2.3e5, 64.0), (2.2e5, 58.0), (2.4e5, 60.0), (9e5, 300.0)]
NAMES = ["emd_3488", "my-map-half1", "my-map-half2", "my-map-sharp", "emd_11007"]


def _extents(fig, ax):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    # the text alone: an Annotation's own extent includes its leader line
    return [Text.get_window_extent(t, renderer) for t in ax.texts]


@pytest.mark.parametrize("log", [True, False])
def test_labels_of_close_points_do_not_overlap(log: bool) -> None:
    fig, ax = plt.subplots(figsize=(5.5, 4.4))
    ax.scatter(*zip(*POINTS, strict=True))
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    fig.tight_layout()
    place_labels(ax, POINTS, NAMES)
    boxes = _extents(fig, ax)
    assert [t.get_text() for t in ax.texts] == sorted(NAMES, key=lambda n: POINTS[NAMES.index(n)])
    for a, b in itertools.combinations(boxes, 2):
        assert not a.overlaps(b), (a, b)
    plt.close(fig)


def test_without_placement_the_same_labels_overlap() -> None:
    """The case is a real one: the old fixed offset puts these labels on top of each other."""
    fig, ax = plt.subplots(figsize=(5.5, 4.4))
    ax.scatter(*zip(*POINTS, strict=True))
    ax.set_xscale("log")
    ax.set_yscale("log")
    for name, xy in zip(NAMES, POINTS, strict=True):
        ax.annotate(name, xy, textcoords="offset points", xytext=(6, -10), fontsize=8)
    boxes = _extents(fig, ax)
    assert any(a.overlaps(b) for a, b in itertools.combinations(boxes, 2))
    plt.close(fig)


def test_one_label_per_point() -> None:
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="one label per point"):
        place_labels(ax, POINTS, NAMES[:2])
    plt.close(fig)
