"""neural-em: continuous representations of cryo-EM maps (spline, trilinear, Fourier, learned
and neural fields: :data:`FIELD_KINDS`) and the density graphs drawn from them.

Layers, each importing only those below it:

1. map and model I/O: :mod:`neural_em.voxelmap`, :mod:`neural_em.models`,
   :mod:`neural_em.simulate`, :mod:`neural_em.atomic`, :mod:`neural_em.errors`
2. continuous fields: :mod:`neural_em.fields`
3. graphs and evaluation: :mod:`neural_em.graph`
4. the pipeline: :mod:`neural_em.pipeline` (workflow helpers and the interpolation experiment)
5. command line: :mod:`neural_em.cli`

``tests/test_architecture.py`` holds the layers and checks them, and that no imports form a
cycle. Modules inside the package never import this one (it re-exports every layer).
"""

from __future__ import annotations

from neural_em._version import __version__
from neural_em.errors import FieldFormatError, InputError, MapFormatError, SizeLimitError
from neural_em.fields import FIELD_KINDS, DensityField, SplineDensityMap, fit_field, load_field
from neural_em.voxelmap import Normalisation, VoxelMap, load_normalised, read_map, write_map

__all__ = [
    "__version__",
    "FIELD_KINDS",
    "DensityField",
    "FieldFormatError",
    "InputError",
    "MapFormatError",
    "NeuralDensityMap",
    "Normalisation",
    "SizeLimitError",
    "SplineDensityMap",
    "VoxelMap",
    "fit_field",
    "load_field",
    "load_normalised",
    "read_map",
    "write_map",
]


def __getattr__(name: str):
    if name == "NeuralDensityMap":
        from neural_em.fields.neural import NeuralDensityMap

        return NeuralDensityMap
    if name == "DensityGraph":
        from neural_em.graph import DensityGraph

        return DensityGraph
    raise AttributeError(name)
