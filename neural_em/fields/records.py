"""The per-region training record: what the trainer writes for each region of a neural field.

One record per region of the tiling, stored in a ``.neural`` header as
``header["training"]["regions"]`` (see :func:`training_summary`), and read back by the field
loader (:mod:`neural_em.fields.neural`) and by the pipeline's collection
(:mod:`neural_em.pipeline.collect`). It is written and read strictly: exactly the fields of
:class:`RegionRecord`, with their types, so that renaming a field fails loudly on reading
instead of turning into empty cells in the study's tables.

``header["training"]["record_version"]`` is :data:`RECORD_VERSION`. Files written before the
version was recorded carry no version and exactly the version-1 fields, so a missing version
reads as 1; any other version is refused. Change :data:`RECORD_VERSION` with the fields.

No torch here: the collection reads records without importing the trainer.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from neural_em.errors import FieldFormatError

#: Version of the record's fields (``header["training"]["record_version"]``).
RECORD_VERSION = 1
#: Why a region stopped training (``"empty"``: skipped, it holds no density).
STOP_REASONS = ("converged", "patience", "epoch_cap", "time_budget", "empty")


@dataclasses.dataclass(frozen=True)
class RegionRecord:
    """How the training of one region went.

    ``loss``: best mean squared error on targets scaled to [-1, 1] (None: never evaluated);
    ``max_error``: the absolute error (normalised density) at the best weights; ``epochs``:
    epochs trained; ``best_epoch``: the epoch of the best weights; ``seconds``: wall time until
    the region stopped (with batched groups, not a share of the group's time); ``stop``: one of
    :data:`STOP_REASONS`.
    """

    loss: float | None
    max_error: float | None
    epochs: int
    best_epoch: int
    seconds: float
    stop: str

    def __post_init__(self) -> None:
        _check_record(dataclasses.asdict(self))

    @classmethod
    def empty(cls) -> RegionRecord:
        """The record of a region skipped because it holds no density."""
        return cls(loss=0.0, max_error=0.0, epochs=0, best_epoch=0, seconds=0.0, stop="empty")

    @classmethod
    def untrained(cls, stop: str = "converged") -> RegionRecord:
        """The record of a region whose network was not trained here (given or converted)."""
        return cls(loss=None, max_error=None, epochs=0, best_epoch=0, seconds=0.0, stop=stop)

    @property
    def skipped(self) -> bool:
        """The region holds no density and carries no network."""
        return self.stop == "empty"

    def to_dict(self) -> dict[str, Any]:
        """The JSON object stored in a field file."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: Any) -> RegionRecord:
        """Read a stored record strictly: exactly the fields of the class, with their types.

        Raises :class:`FieldFormatError` (one line, no path) for anything else.
        """
        _check_record(record)
        return cls(**record)


_FIELDS = tuple(f.name for f in dataclasses.fields(RegionRecord))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_record(record: Any) -> None:
    if not isinstance(record, Mapping):
        raise FieldFormatError(f"a training record is {type(record).__name__}, not an object")
    keys = set(record)
    if keys != set(_FIELDS):
        missing = sorted(set(_FIELDS) - keys)
        unknown = sorted(keys - set(_FIELDS))
        raise FieldFormatError(
            f"training record (version {RECORD_VERSION}) has the wrong fields"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(map(str, unknown))}" if unknown else "")
        )
    for name in ("loss", "max_error"):
        value = record[name]
        if value is not None and not (_is_number(value) and value >= 0):
            raise FieldFormatError(
                f"training record {name} must be a non-negative number or null, got {value!r}"
            )
    for name in ("epochs", "best_epoch"):
        if not _is_count(record[name]):
            raise FieldFormatError(
                f"training record {name} must be a non-negative integer, got {record[name]!r}"
            )
    if not (_is_number(record["seconds"]) and record["seconds"] >= 0):
        raise FieldFormatError(
            f"training record seconds must be a non-negative number, got {record['seconds']!r}"
        )
    if record["stop"] not in STOP_REASONS:
        raise FieldFormatError(
            f"training record stop {record['stop']!r} is not one of {', '.join(STOP_REASONS)}"
        )


def training_summary(
    records: Sequence[RegionRecord | Mapping[str, Any]], seconds: float, seed: int
) -> dict[str, Any]:
    """``header["training"]``: the records (checked), stop counts, total seconds, the seed."""
    checked = [r if isinstance(r, RegionRecord) else RegionRecord.from_dict(r) for r in records]
    counts = {reason: 0 for reason in STOP_REASONS}
    for rec in checked:
        counts[rec.stop] += 1
    return {
        "record_version": RECORD_VERSION,
        "regions": [r.to_dict() for r in checked],
        "stop_counts": counts,
        "seconds": round(float(seconds), 3),
        "seed": int(seed),
    }


def read_region_records(training: Any, n_regions: int | None = None) -> list[RegionRecord]:
    """The records of ``header["training"]``, read strictly; ``n_regions``: how many the
    tiling has. Raises :class:`FieldFormatError` (one line, no path) on a record of another
    version, a missing list, the wrong number of records or a record with other fields."""
    if not isinstance(training, Mapping):
        raise FieldFormatError("the training summary is missing or not an object")
    version = training.get("record_version", 1)
    if version != RECORD_VERSION:
        raise FieldFormatError(
            f"training records of version {version!r}; this version of "
            f"neural-em reads version {RECORD_VERSION}"
        )
    records = training.get("regions")
    if not isinstance(records, list):
        raise FieldFormatError("training records missing")
    if n_regions is not None and len(records) != n_regions:
        raise FieldFormatError(f"{len(records)} training records for {n_regions} regions")
    out = []
    for i, rec in enumerate(records):
        try:
            out.append(RegionRecord.from_dict(rec))
        except FieldFormatError as exc:
            raise FieldFormatError(f"region {i}: {exc.message}") from exc
    return out


def json_float(v: float) -> float | None:
    """A float for JSON: None for NaN and infinities."""
    v = float(v)
    return v if math.isfinite(v) else None


def from_json_float(v: float | None) -> float:
    """The inverse of :func:`json_float` for losses: None reads as infinity."""
    return math.inf if v is None else float(v)
