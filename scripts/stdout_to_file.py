"""Run a command and write its standard output to a file atomically: ``OUT -- cmd ...``.

For commands that print their result (``neural-em evaluate --json``): the output file appears,
complete, only if the command succeeds.
"""

from __future__ import annotations

import subprocess
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("stdout_to_file.py: usage: stdout_to_file.py OUT -- command ...", file=sys.stderr)
        return 2
    from neural_em.atomic import atomic_write_bytes

    proc = subprocess.run(argv[2:], stdout=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        return proc.returncode
    atomic_write_bytes(argv[0], proc.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
