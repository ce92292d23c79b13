"""GPU slots for concurrent workflow jobs: each running job gets its own device.

Snakemake's ``--resources gpu=N`` caps how many GPU jobs run at once but does not say which
device each should use. :func:`gpu_slot` does: it takes an exclusive ``fcntl.flock`` lock on one
file per device in a runtime folder, sets ``CUDA_VISIBLE_DEVICES`` to that device for the job
(its subprocesses, and torch in this process when CUDA is not initialised yet) and releases it
on exit. The OS drops the lock of a process that dies (even by SIGKILL), so a crashed job never
holds a device. Without GPUs it returns ``"cpu"`` at once.

    with gpu_slot() as device:           # "cuda" or "cpu"
        fit(..., device=device)

Devices: ``n_slots`` if given, else ``NEURAL_EM_GPUS`` (a count), else the entries of an
inherited ``CUDA_VISIBLE_DEVICES`` (slot i -> its i-th entry, so ``CUDA_VISIBLE_DEVICES=2,3``
gives slots on devices 2 and 3), else ``torch.cuda.device_count()``.

Runtime folder: ``runtime_dir``, else ``NEURAL_EM_GPU_RUNTIME``, else
``$XDG_RUNTIME_DIR/neural-em-gpu-slots`` or ``/tmp/neural-em-gpu-slots-<uid>``. It must be
node-local (flock over NFS is unreliable). Inside a SLURM job the scheduler has already given
the job its own devices, so the default folder gets a per-job sub-folder and jobs never wait
for each other's locks.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from neural_em.errors import InputError

logger = logging.getLogger(__name__)

#: Environment variable naming the slot index a job holds (set while inside :func:`gpu_slot`).
SLOT_ENV = "NEURAL_EM_GPU_SLOT"


def default_runtime_dir() -> Path:
    """The lock folder used when none is given (see the module doc)."""
    env = os.environ.get("NEURAL_EM_GPU_RUNTIME")
    if env:
        base = Path(env)
    elif os.environ.get("XDG_RUNTIME_DIR"):
        base = Path(os.environ["XDG_RUNTIME_DIR"]) / "neural-em-gpu-slots"
    else:
        base = Path(tempfile.gettempdir()) / f"neural-em-gpu-slots-{os.getuid()}"
    job = os.environ.get("SLURM_JOB_ID")
    return base / f"slurm-{job}" if job else base


def visible_devices(n_slots: int | None = None) -> list[str]:
    """Device ids the slots map to (strings as ``CUDA_VISIBLE_DEVICES`` takes them)."""
    inherited = os.environ.get("CUDA_VISIBLE_DEVICES")
    inherited_ids = (
        [d.strip() for d in inherited.split(",") if d.strip()] if inherited is not None else None
    )
    if n_slots is None:
        env = os.environ.get("NEURAL_EM_GPUS")
        if env not in (None, ""):
            try:
                n_slots = int(env)
            except ValueError as exc:
                raise InputError(f"NEURAL_EM_GPUS={env!r} is not a whole number") from exc
    if n_slots is not None:
        if n_slots < 0:
            raise InputError(f"n_slots={n_slots}: the number of GPUs cannot be negative")
        if inherited_ids is not None and len(inherited_ids) >= n_slots:
            return inherited_ids[:n_slots]
        return [str(i) for i in range(n_slots)]
    if inherited_ids is not None:
        # "" or "-1" hide every GPU
        return [] if any(d.startswith("-") for d in inherited_ids) else inherited_ids
    try:
        import torch
    except ImportError:
        return []
    return [str(i) for i in range(torch.cuda.device_count())]


def _try_lock(path: Path) -> int | None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    return fd


def _cuda_initialised() -> bool:
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_initialized())
    except Exception:  # pragma: no cover - exotic torch builds
        return False


def _cuda_usable() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@contextlib.contextmanager
def gpu_slot(
    n_slots: int | None = None,
    runtime_dir: str | os.PathLike | None = None,
    *,
    timeout_s: float | None = None,
    poll_s: float = 0.2,
    check_cuda: bool = True,
) -> Iterator[str]:
    """Hold one free GPU slot for the ``with`` block; yields the torch device string.

    Yields ``"cuda"`` (with ``CUDA_VISIBLE_DEVICES`` set to the held device, and
    ``NEURAL_EM_GPU_SLOT`` to the slot index) or ``"cuda:K"`` when CUDA was already initialised
    in this process (then the variable can no longer change what torch sees), or ``"cpu"``
    where there are no GPU slots or torch has no CUDA. Waits for a slot to free up, at most
    ``timeout_s`` seconds (``None``: forever; then ``TimeoutError``). ``check_cuda=False``
    skips asking torch whether CUDA works (no torch import: for a wrapper that only hands the
    device to a subprocess). Restores the environment on exit.
    """
    devices = visible_devices(n_slots)
    if not devices:
        logger.info("no GPU: running on the CPU")
        yield "cpu"
        return
    folder = Path(runtime_dir) if runtime_dir is not None else default_runtime_dir()
    folder.mkdir(parents=True, exist_ok=True)
    # start at a per-process offset so concurrent jobs do not all fight over slot 0 first
    start = os.getpid() % len(devices)
    order = [(start + i) % len(devices) for i in range(len(devices))]
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    fd = slot = None
    waited = False
    while fd is None:
        for index in order:
            fd = _try_lock(folder / f"gpu-{devices[index]}.lock")
            if fd is not None:
                slot = index
                break
        if fd is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(
                    f"no free GPU slot among {len(devices)} in {folder} after {timeout_s} s"
                )
            if not waited:
                logger.info("all %d GPU slots in %s busy; waiting", len(devices), folder)
                waited = True
            time.sleep(poll_s)
    assert slot is not None
    device_id = devices[slot]
    saved = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", SLOT_ENV)}
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()} {time.time():.3f}\n".encode())
        initialised = _cuda_initialised()
        if not initialised:
            os.environ["CUDA_VISIBLE_DEVICES"] = device_id
        os.environ[SLOT_ENV] = str(slot)
        if check_cuda and not _cuda_usable():
            device = "cpu"
            logger.warning(
                "GPU slot %d (device %s) held, but torch has no CUDA: using the CPU",
                slot,
                device_id,
            )
        elif initialised:
            # CUDA already enumerated the inherited devices: address the slot by its index
            device = f"cuda:{slot}"
        else:
            device = "cuda"
        logger.info("GPU slot %d: CUDA_VISIBLE_DEVICES=%s, device %s", slot, device_id, device)
        yield device
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
