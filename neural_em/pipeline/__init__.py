"""Workflow helpers for the reproducibility pipeline; the Snakemake rules in ``workflow/`` and
their scripts in ``scripts/`` call them, and they are tested without Snakemake.

- :mod:`neural_em.pipeline.dataset`: the study's dataset selection from an EMDB search export.
- :mod:`neural_em.pipeline.archive`: where the EMDB and PDB archives keep each file (URLs) and
  the EMDB entry record's parsing; no network.
- :mod:`neural_em.pipeline.download`: the checked fetch (EMDB maps and metadata, PDB models and
  sequences) with retries, integrity checks, atomic writes and a local mirror.
- :mod:`neural_em.pipeline.gpu_slots`: one GPU per concurrent job (file-lock slots).
- :mod:`neural_em.pipeline.collect`, :mod:`neural_em.pipeline.figures`: metrics tables, figures.
- :mod:`neural_em.pipeline.interpolation`: the interpolation experiments (simulated control,
  Chimera's maps, held-out voxels).

Submodules are imported on demand (``from neural_em.pipeline import download``) so a rule pays
only for what it uses.
"""
