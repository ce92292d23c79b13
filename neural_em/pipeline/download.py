"""Downloads from the EMDB and PDB archives (or a local mirror), checked and written atomically.

:func:`fetch` streams a URL into a temporary file beside the destination, checks it (a
``validate`` callable such as :func:`check_mrc_header`) and only then renames it to its final
name: a download cut half-way, a truncated gzip or a server's error page never lands under the
destination's name. Connection errors, timeouts, 5xx/408/429 answers and files that fail the
check are retried with exponential backoff; a 404 (or another 4xx) fails at once with an error
naming the URL and the status.

URLs and the EMDB metadata record come from :mod:`neural_em.pipeline.archive`.

Local mirror: a folder laid out like the archives, i.e. holding each file under its path below
the base URL (``structures/EMD-3488/map/emd_3488.map.gz``, ``entry/EMD-3488``,
``5ni1.cif.gz``, ``entry/5NI1``). :func:`fetch` looks for the URL's path in the mirror, longest
suffix first (so ``pub/databases/emdb/structures/...`` and a ``wget -m`` copy with the host
name as first folder work too), checks the file and copies it atomically. With
``offline=True`` the network is never used.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import re
import shutil
import sys
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neural_em.atomic import atomic_path, check_output_path
from neural_em.errors import InputError
from neural_em.pipeline.archive import (
    check_json,
    emdb_metadata_url,
    open_maybe_gzip,
    parse_emdb_metadata,
)

logger = logging.getLogger(__name__)

#: HTTP statuses worth another try (besides every 5xx).
RETRY_STATUSES = frozenset({408, 425, 429})
#: Largest wait between two tries, whatever the backoff says (s).
MAX_BACKOFF_S = 300.0
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    """A file could not be fetched (or failed its check); ``url`` and ``status`` tell why."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(message)


class NotFoundError(DownloadError):
    """The server answered 404/410: the file does not exist there (never retried)."""


class _Retryable(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


# ----------------------------------------------------------------------------- checks


def is_gzip(path: str | os.PathLike) -> bool:
    """True if the file starts with the gzip magic bytes."""
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def check_gzip_complete(path: str | os.PathLike) -> int:
    """Decompress the whole gzip stream (in chunks) and return its size in bytes.

    Raises :class:`InputError` if the file is not gzip, is truncated (the stream ends before its
    end marker), fails its CRC/length check, or has garbage after the last member.
    """
    path = Path(path)
    if not is_gzip(path):
        raise InputError("not a gzip file (wrong magic bytes)", path)
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(_CHUNK):
                total += len(chunk)
    except EOFError as exc:
        raise InputError(f"gzip stream is truncated after {total} bytes ({exc})", path) from exc
    except (OSError, gzip.BadGzipFile, ValueError) as exc:
        raise InputError(f"gzip stream is corrupt after {total} bytes ({exc})", path) from exc
    return total


def check_mrc_header(path: str | os.PathLike, *, max_voxels: int | None = None) -> dict[str, Any]:
    """Check an MRC/CCP4 map (plain or gzipped) without reading its data into memory.

    The header is read by the package's one MRC header reader
    (:func:`neural_em.mrcread.read_map_header`: positive dimensions, a supported mode, an axis
    order that is a permutation of 1, 2, 3, a positive cell), which never reads the extended
    header a hostile download may claim, and checked against a voxel count of ``max_voxels``
    (default: no limit here). Size: the file (or the whole decompressed stream, which also
    proves the gzip is complete) holds at least the bytes the header promises. Returns
    ``{"shape_xyz", "voxel_size", "mode", "voxels"}``; raises :class:`InputError` naming the
    file and the problem.
    """
    from neural_em.mrcread import read_map_header

    path = Path(path)
    gz = is_gzip(path)
    # a gzip is checked whole first: a cut stream is the likeliest fault and deserves its name
    stream_size = check_gzip_complete(path) if gz else None
    header = read_map_header(path, max_voxels=sys.maxsize if max_voxels is None else max_voxels)
    if stream_size is not None and stream_size < header.file_bytes:
        raise InputError(
            f"MRC data is truncated: header needs {header.file_bytes} bytes, "
            f"stream has {stream_size}",
            path,
        )
    return {
        "shape_xyz": list(header.shape_xyz),
        "voxel_size": header.voxel_size.tolist(),
        "mode": header.mode,
        "voxels": header.voxels,
    }


def check_mmcif(path: str | os.PathLike) -> int:
    """Check an mmCIF model (plain or gzipped, read by content: temporary files have no
    .cif(.gz) suffix) with the package's structure reader
    (:func:`neural_em.models.read_structure`); return its atom count (> 0)."""
    from neural_em.models import read_structure

    path = Path(path)
    if is_gzip(path):
        check_gzip_complete(path)
    return read_structure(path, by_content=True)[0].count_atom_sites()


_FASTA_SEQUENCE = re.compile(r"[A-Za-z*\-]+")


def check_fasta(path: str | os.PathLike) -> int:
    """Check a FASTA file (plain or gzipped): headers ``>...`` each followed by a sequence.

    Returns the number of sequences; raises :class:`InputError` for HTML error pages, empty
    files, records without sequence or lines with other characters.
    """
    path = Path(path)
    with open_maybe_gzip(path) as handle:
        raw = handle.read(64 * 1024 * 1024 + 1)
    if len(raw) > 64 * 1024 * 1024:
        raise InputError("FASTA file larger than 64 MiB", path)
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise InputError("FASTA file is not ASCII text", path) from exc
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines or not lines[0].startswith(">"):
        raise InputError("not a FASTA file (first line does not start with '>')", path)
    count, residues = 0, 0
    for number, line in enumerate(lines, start=1):
        if line.startswith(">"):
            if count and residues == 0:
                raise InputError(f"FASTA record before line {number} has no sequence", path)
            count, residues = count + 1, 0
        elif _FASTA_SEQUENCE.fullmatch(line):
            residues += len(line)
        else:
            raise InputError(f"FASTA line {number} is not a sequence: {line[:40]!r}", path)
    if residues == 0:
        raise InputError("last FASTA record has no sequence", path)
    return count


# ----------------------------------------------------------------------------- EMDB metadata


def emdb_metadata(
    emd_id: str | int, dest: str | os.PathLike, *, base: str, **fetch_options: Any
) -> dict[str, Any]:
    """Fetch an entry's EMDB API record to ``dest`` (checked JSON) and parse it.

    ``fetch_options`` go to :func:`fetch` (timeouts, retries, mirror, session, ...).
    """
    fetch(emdb_metadata_url(emd_id, base=base), dest, validate=check_json, **fetch_options)
    return parse_emdb_metadata(dest)


# ----------------------------------------------------------------------------- fetching


def mirror_candidates(url: str, mirror_root: str | os.PathLike) -> list[Path]:
    """Where a mirror may hold ``url``: its path's suffixes, longest first, then host/path."""
    parsed = urllib.parse.urlsplit(url)
    parts = [urllib.parse.unquote(p) for p in parsed.path.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise InputError(f"URL {url!r} has no usable path for a mirror")
    root = Path(mirror_root)
    candidates = [root.joinpath(*parts[i:]) for i in range(len(parts))]
    if parsed.hostname:
        candidates.insert(0, root.joinpath(parsed.hostname, *parts))
    return candidates


def _run_validate(validate: Callable[[Path], Any] | None, path: Path) -> None:
    if validate is None:
        return
    validate(path)


def _from_mirror(
    url: str,
    dest: Path,
    mirror_root: str | os.PathLike,
    validate: Callable[[Path], Any] | None,
    overwrite: bool,
) -> Path | None:
    for candidate in mirror_candidates(url, mirror_root):
        if not candidate.is_file():
            continue
        try:
            with atomic_path(dest, overwrite=overwrite) as tmp:
                shutil.copyfile(candidate, tmp)
                _run_validate(validate, tmp)
        except (InputError, ValueError, OSError) as exc:
            problem = getattr(exc, "message", None) or str(exc)
            raise DownloadError(
                f"{url}: mirror copy {candidate} failed its check: {problem}", url=url
            ) from exc
        logger.info("%s: taken from the mirror %s", dest, candidate)
        return dest
    return None


def _network_errors() -> tuple[type[BaseException], ...]:
    import http.client
    import socket

    import requests
    import urllib3

    # not OSError as a whole: a full disk must not look like a flaky network
    return (
        requests.RequestException,
        urllib3.exceptions.HTTPError,
        http.client.HTTPException,
        ConnectionError,
        TimeoutError,
        socket.timeout,
    )


def _stream_once(session: Any, url: str, tmp: Path, timeout_s: float) -> int:
    """One GET into ``tmp``; returns bytes written. Raises _Retryable or NotFoundError/..."""
    import requests

    network_errors = _network_errors()
    try:
        response = session.get(url, stream=True, timeout=(timeout_s, timeout_s))
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Retryable(f"{type(exc).__name__}: {_short(exc)}") from exc
    with contextlib.closing(response):
        status = response.status_code
        if status in (404, 410):
            raise NotFoundError(
                f"{url}: HTTP {status} (not found on the server)", url=url, status=status
            )
        if status >= 500 or status in RETRY_STATUSES:
            raise _Retryable(f"HTTP {status} {response.reason or ''}".strip(), status)
        if status >= 400:
            raise DownloadError(
                f"{url}: HTTP {status} {response.reason or ''}".strip(), url=url, status=status
            )
        expected = response.headers.get("Content-Length")
        written = 0
        try:
            with open(tmp, "wb") as out:
                # decode_content=False: keep a .gz file as the server sent it
                for chunk in response.raw.stream(_CHUNK, decode_content=False):
                    out.write(chunk)
                    written += len(chunk)
        except network_errors as exc:
            raise _Retryable(
                f"connection broken after {written} bytes ({type(exc).__name__}: {_short(exc)})"
            ) from exc
        if expected is not None and expected.isdigit() and written != int(expected):
            raise _Retryable(f"got {written} bytes, the server announced {expected}")
        return written


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    timeout_s: float = 60.0,
    retries: int = 3,
    backoff_s: float = 2.0,
    validate: Callable[[Path], Any] | None = None,
    mirror_root: str | os.PathLike | None = None,
    offline: bool = False,
    session: Any = None,
    overwrite: bool = False,
) -> Path:
    """Download ``url`` to ``dest`` atomically, after ``validate(temp_path)`` accepted it.

    - ``timeout_s``: connect and per-read timeout (a server that stops sending for that long
      counts as a failed try).
    - ``retries``: further tries after a connection error, a timeout, a cut-off body, an HTTP
      5xx/408/425/429 or a file that fails ``validate``; waits ``backoff_s * 2**k`` seconds
      (at most 300 s) before try ``k + 1``. A 404/410 raises :class:`NotFoundError` at once,
      other 4xx :class:`DownloadError` at once.
    - ``validate``: a callable given the temporary file's path; raising (e.g.
      :class:`InputError` from :func:`check_mrc_header`) refuses it.
    - ``mirror_root``: a folder laid out like the archive; a file found there is checked and
      copied instead of downloaded (see :func:`mirror_candidates`). ``offline=True``: never use
      the network (a file missing from the mirror is an error).
    - ``session``: a ``requests.Session`` to reuse (connection pooling, proxies, auth).
    - ``overwrite``: replace an existing ``dest`` (only once the new file passed its check);
      without it an existing ``dest`` raises ``FileExistsError``.

    On any failure nothing is left under ``dest`` (and no temporary file either); raises
    :class:`DownloadError` naming the URL and the last problem.
    """
    dest = Path(dest)
    check_output_path(dest, overwrite=overwrite)
    if retries < 0 or timeout_s <= 0 or backoff_s < 0:
        raise InputError(
            f"retries={retries}, timeout_s={timeout_s}, backoff_s={backoff_s}: "
            "need retries >= 0, timeout_s > 0, backoff_s >= 0"
        )
    if mirror_root is not None:
        if not Path(mirror_root).is_dir():
            raise InputError("download mirror folder does not exist", mirror_root)
        found = _from_mirror(url, dest, mirror_root, validate, overwrite)
        if found is not None:
            return found
    if offline:
        looked = (
            ", ".join(str(p) for p in mirror_candidates(url, mirror_root)[:3])
            if mirror_root is not None
            else "no mirror configured"
        )
        raise DownloadError(
            f"{url}: not in the local mirror ({looked}) and offline mode "
            "forbids the network (download.offline)",
            url=url,
        )

    own_session = session is None
    if own_session:
        import requests

        from neural_em._version import __version__ as version

        session = requests.Session()
        session.headers["User-Agent"] = f"neural-em/{version} (python-requests)"
        session.headers["Accept-Encoding"] = "identity"
    last = "no try made"
    last_status: int | None = None
    try:
        for attempt in range(retries + 1):
            if attempt:
                wait = min(backoff_s * 2 ** (attempt - 1), MAX_BACKOFF_S)
                logger.warning(
                    "%s: try %d of %d failed (%s); retrying in %.1f s",
                    url,
                    attempt,
                    retries + 1,
                    last,
                    wait,
                )
                time.sleep(wait)
            t0 = time.monotonic()
            try:
                with atomic_path(dest, overwrite=overwrite) as tmp:
                    size = _stream_once(session, url, tmp, timeout_s)
                    try:
                        _run_validate(validate, tmp)
                    except (InputError, ValueError, OSError) as exc:
                        raise _Retryable(
                            f"downloaded file failed its check: {getattr(exc, 'message', exc)}"
                        ) from exc
            except _Retryable as exc:
                last, last_status = str(exc), exc.status
                continue
            logger.info("%s: %d bytes from %s in %.1f s", dest, size, url, time.monotonic() - t0)
            return dest
    finally:
        if own_session:
            session.close()
    raise DownloadError(
        f"{url}: failed after {retries + 1} tries; last: {last}", url=url, status=last_status
    )
