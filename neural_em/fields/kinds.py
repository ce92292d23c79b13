"""The registry of field kinds: one name per field class, and the two doors by kind.

:data:`FIELD_KINDS` maps each kind (the ``kind`` a ``.neural`` file records, the CLI's
``--field`` choices, the configuration's enums) to its class; a class is imported on first
use (the neural field needs torch). :func:`fit_field` fits a kind to a map file and
:func:`load_field` reads any saved field.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from neural_em.errors import FieldFormatError, InputError
from neural_em.fields.base import DensityField
from neural_em.fields.fileformat import read_field_file

#: Field kinds, name -> (module, class): the no-training baselines first, the neural last.
_CLASSES = {
    "spline": ("neural_em.fields.spline", "SplineDensityMap"),
    "trilinear": ("neural_em.fields.classical", "TrilinearDensityMap"),
    "fourier": ("neural_em.fields.classical", "FourierDensityMap"),
    "learned": ("neural_em.fields.learned", "LearnedDensityMap"),
    "neural": ("neural_em.fields.neural", "NeuralDensityMap"),
}


class _FieldKinds(Mapping[str, type[DensityField]]):
    """Kind name -> field class, each class imported when first looked up."""

    def __getitem__(self, kind: str) -> type[DensityField]:
        module, name = _CLASSES[kind]
        return getattr(importlib.import_module(module), name)

    def __iter__(self) -> Iterator[str]:
        return iter(_CLASSES)

    def __len__(self) -> int:
        return len(_CLASSES)

    def __repr__(self) -> str:
        return f"FIELD_KINDS({', '.join(_CLASSES)})"


#: One line per kind for help texts (the CLI's ``--field``).
FIELD_HELP = (
    "spline (cubic B-spline, instant), trilinear (instant), fourier (sinc upsampling, "
    "then a spline; seconds), learned (a packaged network refines the map 2x; seconds), "
    "neural (a SIREN per region, trained)"
)

#: The field kinds: name -> class (``spline``, ``trilinear``, ``fourier``, ``learned``,
#: ``neural``). ``tuple(FIELD_KINDS)`` lists the names without importing any class.
FIELD_KINDS: Mapping[str, type[DensityField]] = _FieldKinds()


def field_class(kind: str) -> type[DensityField]:
    """The class of field ``kind``; InputError for an unknown kind or one this build lacks."""
    if kind not in _CLASSES:
        raise InputError(f"field must be one of {tuple(FIELD_KINDS)}, got {kind!r}")
    try:
        return FIELD_KINDS[kind]
    except ImportError as exc:  # torch missing
        raise InputError(f"the {kind} field is not available in this build ({exc})") from exc


def fit_field(
    path: str | os.PathLike,
    kind: str = "spline",
    *,
    contour: float | None = None,
    max_voxels: int | None = None,
    devices: Sequence[str] = ("cpu",),
    preset: str = "fast",
    **options: Any,
) -> DensityField:
    """Read a map file and fit a field of ``kind`` (a name of :data:`FIELD_KINDS`).

    ``contour``: raw density level to crop the map to (with a margin) before fitting;
    ``devices``/``preset``: the neural fit's (ignored by fields without training);
    ``options``: the kind's own (``margin_A``, the learned field's ``weights``, the neural
    fit's ``seed`` ...). The field's ``max_voxels`` is set, so the same limit bounds a graph's
    seed grid.
    """
    cls = field_class(str(kind))
    if getattr(cls, "trained", False):
        options = {"devices": tuple(devices), "preset": preset, **options}
    field = cls.from_voxel_map(path, contour, max_voxels=max_voxels, **options)
    field.max_voxels = max_voxels
    return field


def load_field(path: str | os.PathLike) -> DensityField:
    """Load any field saved as a ``.neural`` file (the kind is read from its metadata)."""
    header, tensors = read_field_file(path)
    kind = header.get("kind")
    if not isinstance(kind, str) or kind not in _CLASSES:
        raise FieldFormatError(f"unknown field kind {kind!r} (known: {tuple(FIELD_KINDS)})", path)
    return FIELD_KINDS[kind].from_file_contents(header, tensors, path)
