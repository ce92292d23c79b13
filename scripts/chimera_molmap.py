"""Rule ``chimera_maps``: the study's simulated maps made by UCSF Chimera.

Writes a Chimera command file that opens the model, runs ``molmap #0@C,N,O R`` (the coarse map,
Chimera's default spacing resolution/3), ``molmap #0@C,N,O R gridSpacing 0.2`` (the control)
and ``vop resample #1 onGrid #2`` (Chimera's trilinear resampling of the coarse map onto the
control's grid), saves the three maps, and runs ``CHIMERA --nogui --nostatus --silent FILE``.
The maps are written under temporary names and renamed when Chimera succeeded.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path


def chimera_commands(
    model: str, *, resolution_A: float, fine_step_A: float, coarse: str, fine: str, trilinear: str
) -> str:
    """The Chimera command script (one command a line)."""
    return "\n".join(
        [
            f"open #0 {model}",
            f"molmap #0@C,N,O {resolution_A:g} modelId 1",
            f"molmap #0@C,N,O {resolution_A:g} gridSpacing {fine_step_A:g} modelId 2",
            "vop resample #1 onGrid #2 modelId 3",
            f"volume #1 save {coarse}",
            f"volume #2 save {fine}",
            f"volume #3 save {trilinear}",
            "stop now",
            "",
        ]
    )


def tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.tmp{path.suffix}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chimera_molmap.py", description=__doc__)
    parser.add_argument("--model", required=True, help="model (mmCIF/PDB, optionally .gz)")
    parser.add_argument("--resolution", type=float, required=True, help="Å")
    parser.add_argument("--fine-step", type=float, default=0.2, help="control spacing, Å")
    parser.add_argument("--coarse", type=Path, required=True)
    parser.add_argument("--fine", type=Path, required=True)
    parser.add_argument("--trilinear", type=Path, required=True)
    parser.add_argument("--commands", type=Path, required=True, help="command file to write")
    parser.add_argument("--chimera", required=True, help="Chimera executable")
    args = parser.parse_args(argv)
    from neural_em.atomic import atomic_write_text

    outdir = args.commands.parent
    outdir.mkdir(parents=True, exist_ok=True)
    model = Path(args.model)
    if model.suffix == ".gz":  # Chimera reads plain mmCIF/PDB
        plain = outdir / model.name[:-3]
        with gzip.open(model, "rb") as src, open(plain, "wb") as dst:
            shutil.copyfileobj(src, dst)
        model = plain
    outs = [args.coarse, args.fine, args.trilinear]
    tmps = [tmp_name(p) for p in outs]
    text = chimera_commands(
        str(model.resolve()),
        resolution_A=args.resolution,
        fine_step_A=args.fine_step,
        coarse=str(tmps[0].resolve()),
        fine=str(tmps[1].resolve()),
        trilinear=str(tmps[2].resolve()),
    )
    atomic_write_text(args.commands, text)
    cmd = [args.chimera, "--nogui", "--nostatus", "--silent", str(args.commands)]
    print("+", " ".join(cmd), flush=True)
    code = subprocess.run(cmd, check=False).returncode
    missing = [str(t) for t in tmps if not t.is_file()]
    if code != 0 or missing:
        for t in tmps:
            t.unlink(missing_ok=True)
        print(
            f"chimera_molmap.py: Chimera exited with {code}; missing maps: {missing}",
            file=sys.stderr,
        )
        return code or 1
    for tmp, out in zip(tmps, outs, strict=True):
        os.replace(tmp, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
