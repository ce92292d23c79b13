#!/usr/bin/env bash
# Snakemake runs this inside the new environment, from the working directory: install the
# neural-em package (its dependencies come from the environment file) from this checkout.
# With --directory elsewhere, set NEURAL_EM_REPO to the repository root.
set -euo pipefail
python -m pip install --no-deps --no-build-isolation -e "${NEURAL_EM_REPO:-$PWD}"
