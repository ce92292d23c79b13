"""Continuous density fields: one query interface (:class:`DensityField`), several fields.

The kinds (:data:`FIELD_KINDS`, name -> class, :mod:`neural_em.fields.kinds`):

* ``spline`` :class:`SplineDensityMap`: cubic B-spline, no training (baseline and fast path).
* ``trilinear``, ``fourier``: :class:`~neural_em.fields.classical.TrilinearDensityMap`,
  :class:`~neural_em.fields.classical.FourierDensityMap`, classical baselines.
* ``learned`` :class:`~neural_em.fields.learned.LearnedDensityMap`: the map refined 2x by a
  network trained across maps, queried by a cubic B-spline.
* ``neural`` :class:`NeuralDensityMap`: one SIREN per region of the map (the study's).

:func:`fit_field` fits any kind to a map file; :func:`load_field` reads any saved field.
"""

from __future__ import annotations

from neural_em.fields.base import DensityField, as_points
from neural_em.fields.kinds import FIELD_KINDS, field_class, fit_field, load_field
from neural_em.fields.spline import SplineDensityMap

__all__ = [
    "FIELD_KINDS",
    "DensityField",
    "NeuralDensityMap",
    "SplineDensityMap",
    "as_points",
    "field_class",
    "fit_field",
    "load_field",
]


def __getattr__(name: str):  # torch is imported only when the neural field is used
    if name == "NeuralDensityMap":
        from neural_em.fields.neural import NeuralDensityMap

        return NeuralDensityMap
    raise AttributeError(name)
