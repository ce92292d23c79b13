"""Continuous density fields: one query interface (:class:`DensityField`), several fields.

* :class:`SplineDensityMap`: cubic B-spline, no training (baseline and fast path).
* :class:`NeuralDensityMap`: one SIREN per region of the map (the study's neural map).
* :class:`~neural_em.fields.classical.TrilinearDensityMap`,
  :class:`~neural_em.fields.classical.FourierDensityMap`: classical baselines.
* :class:`~neural_em.fields.learned.LearnedDensityMap`: the map refined 2x by a network
  trained across maps, queried by a cubic B-spline.
"""

from __future__ import annotations

import os

from neural_em.errors import FieldFormatError
from neural_em.fields.base import DensityField, as_points
from neural_em.fields.fileformat import read_field_file
from neural_em.fields.spline import SplineDensityMap

__all__ = ["DensityField", "SplineDensityMap", "NeuralDensityMap", "as_points", "load_field"]


def __getattr__(name: str):  # torch is imported only when the neural field is used
    if name == "NeuralDensityMap":
        from neural_em.fields.neural import NeuralDensityMap

        return NeuralDensityMap
    raise AttributeError(name)


def load_field(path: str | os.PathLike) -> DensityField:
    """Load any field saved as a ``.neural`` file (the kind is read from its metadata)."""
    header, tensors = read_field_file(path)
    kind = header.get("kind")
    if kind == SplineDensityMap.kind:
        return SplineDensityMap.from_file_contents(header, tensors, path)
    if kind == "neural":
        from neural_em.fields.neural import NeuralDensityMap

        return NeuralDensityMap.from_file_contents(header, tensors, path)
    if kind in ("trilinear", "fourier"):
        from neural_em.fields.classical import FourierDensityMap, TrilinearDensityMap

        cls = TrilinearDensityMap if kind == "trilinear" else FourierDensityMap
        return cls.from_file_contents(header, tensors, path)
    if kind == "learned":
        from neural_em.fields.learned import LearnedDensityMap

        return LearnedDensityMap.from_file_contents(header, tensors, path)
    raise FieldFormatError(
        f"unknown field kind {kind!r} (known: 'spline', 'neural', "
        "'trilinear', 'fourier', 'learned')",
        path,
    )
