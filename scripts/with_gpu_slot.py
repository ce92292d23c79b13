"""Run a command inside a GPU slot: ``with_gpu_slot.py [--record R.json] -- cmd ...``.

Takes a free GPU slot from ``neural_em.pipeline.gpu_slots.gpu_slot`` (file locks in a runtime
folder, so each job running under ``--resources gpu=N`` gets its own device), runs the command
with ``CUDA_VISIBLE_DEVICES`` set and ``--device cuda`` (or ``--device cpu`` where no GPU exists)
appended, holds the slot until the command ends and exits with its code. With ``--record`` it
writes a JSON record (device, CUDA_VISIBLE_DEVICES, host, seconds, command) atomically on success.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print(
            "with_gpu_slot.py: usage: with_gpu_slot.py [--record R] -- command ...", file=sys.stderr
        )
        return 2
    cut = argv.index("--")
    parser = argparse.ArgumentParser(prog="with_gpu_slot.py")
    parser.add_argument("--record", default=None, help="JSON record written on success")
    parser.add_argument(
        "--no-device-flag", action="store_true", help="do not append --device DEVICE to the command"
    )
    args = parser.parse_args(argv[:cut])
    command = argv[cut + 1 :]
    if not command:
        print("with_gpu_slot.py: no command after --", file=sys.stderr)
        return 2
    from neural_em.pipeline.gpu_slots import gpu_slot

    start = time.time()
    with gpu_slot() as device:
        full = list(command) if args.no_device_flag else [*command, "--device", device]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        print(
            f"with_gpu_slot: device {device} (CUDA_VISIBLE_DEVICES={visible}) on "
            f"{socket.gethostname()}: {' '.join(full)}",
            flush=True,
        )
        proc = subprocess.Popen(full)
        forward = {}
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            forward[sig] = signal.signal(sig, lambda s, _f: proc.send_signal(s))
        code = proc.wait()
        for sig, old in forward.items():
            signal.signal(sig, old)
    seconds = time.time() - start
    if code == 0 and args.record:
        from neural_em.atomic import atomic_write_text

        record = {
            "device": device,
            "cuda_visible_devices": visible,
            "host": socket.gethostname(),
            "seconds": round(seconds, 3),
            "command": full,
        }
        atomic_write_text(args.record, json.dumps(record, indent=2) + "\n")
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
