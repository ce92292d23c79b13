"""The viewer's JavaScript: NGL (npm package ``ngl``, MIT), taken from its published package.

The view pages embed ``dist/ngl.js`` of one pinned NGL release, so a page works offline and
from any folder. The file is not kept in git: ``tools/fetch_viewer_js.py`` (run by
``tools/install_system_deps.sh``) fetches the package with the machine's ``npm pack`` and
keeps ``ngl.js`` and its licence under ``neural_em/view/vendor/``; where it is missing when a
page is written, :func:`ngl_js` fetches it the same way. Every copy is checked against the
pinned SHA-256 before use, so a page never embeds another build.

This module uses the standard library only (the fetch tool loads it before the package is
installed).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

logger = logging.getLogger(__name__)

#: The NGL release the pages embed, and the SHA-256 of its ``dist/ngl.js``.
NGL_VERSION = "2.5.0"
NGL_SHA256 = "ceab08a04b246cd4ba799749fce0a822c370e34b7366a3c090530ea5e8d48507"
#: Where the fetched files live inside the package (ignored by git, shipped in a wheel).
VENDOR_DIR = Path(__file__).resolve().parent / "vendor"
#: Environment variable naming another copy of ``ngl.js`` (checked against the same hash).
ENV_VAR = "NEURAL_EM_NGL_JS"


class ViewerAssetError(RuntimeError):
    """The viewer's JavaScript is missing and could not be fetched, or is not the pinned build."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "neural-em" / f"ngl-{NGL_VERSION}"


def candidates() -> list[Path]:
    """Where ``ngl.js`` is looked for, in order: $NEURAL_EM_NGL_JS, the package, the cache."""
    paths = []
    if os.environ.get(ENV_VAR):
        paths.append(Path(os.environ[ENV_VAR]))
    paths += [VENDOR_DIR / "ngl.js", _cache_dir() / "ngl.js"]
    return paths


def find_ngl_js() -> Path | None:
    """The first copy of the pinned ``ngl.js`` found, or None."""
    for path in candidates():
        if path.is_file():
            if _sha256(path) == NGL_SHA256:
                return path
            logger.warning("%s is not ngl %s (SHA-256 differs): ignored", path, NGL_VERSION)
    return None


def fetch_ngl_js(dest: str | os.PathLike | None = None, *, timeout_s: float = 300) -> Path:
    """Fetch ``ngl@NGL_VERSION`` with ``npm pack`` and keep ``ngl.js`` and ``LICENSE`` in
    ``dest`` (default: the package's vendor folder, or the user cache where that is not
    writable). Returns the path of ``ngl.js``; raises :class:`ViewerAssetError`."""
    npm = shutil.which("npm")
    if npm is None:
        raise ViewerAssetError(
            f"the view pages need ngl {NGL_VERSION}'s JavaScript and npm is not installed "
            "to fetch it (install Node.js/npm, then run python tools/fetch_viewer_js.py)"
        )
    if dest is None:
        dest = VENDOR_DIR if _writable(VENDOR_DIR) else _cache_dir()
    dest = Path(dest)
    with tempfile.TemporaryDirectory(prefix="neural-em-ngl-") as tmp:
        logger.info("fetching ngl %s with npm pack", NGL_VERSION)
        proc = subprocess.run(
            [npm, "pack", f"ngl@{NGL_VERSION}", "--silent", "--pack-destination", tmp],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
            cwd=tmp,
        )
        tarballs = sorted(Path(tmp).glob("ngl-*.tgz"))
        if proc.returncode != 0 or not tarballs:
            tail = " ".join((proc.stderr or proc.stdout).split())[-300:]
            raise ViewerAssetError(f"npm pack ngl@{NGL_VERSION} failed: {tail}")
        files = {}
        with tarfile.open(tarballs[0], "r:gz") as tar:  # read two members; nothing extracted
            for name in ("package/dist/ngl.js", "package/LICENSE"):
                member = tar.getmember(name)
                handle = tar.extractfile(member) if member.isfile() else None
                if handle is None:
                    raise ViewerAssetError(f"{name} in the ngl package is not a file")
                files[name] = handle.read()
        js = files["package/dist/ngl.js"]
        if hashlib.sha256(js).hexdigest() != NGL_SHA256:
            raise ViewerAssetError(f"ngl.js of ngl@{NGL_VERSION} does not have the pinned SHA-256")
        dest.mkdir(parents=True, exist_ok=True)
        for data, name in ((files["package/LICENSE"], "LICENSE.ngl"), (js, "ngl.js")):
            fd, part = tempfile.mkstemp(prefix=f".{name}.", dir=dest)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(part, 0o644)
            os.replace(part, dest / name)
    logger.info("ngl %s -> %s", NGL_VERSION, dest / "ngl.js")
    return dest / "ngl.js"


def _writable(folder: Path) -> bool:
    probe = folder if folder.exists() else folder.parent
    return os.access(probe, os.W_OK)


def ngl_js(*, fetch: bool = True) -> Path:
    """The path of the pinned ``ngl.js``; fetched with npm where missing and ``fetch``."""
    found = find_ngl_js()
    if found is not None:
        return found
    if not fetch:
        raise ViewerAssetError(
            f"ngl {NGL_VERSION}'s JavaScript is not installed "
            "(run python tools/fetch_viewer_js.py; it needs npm)"
        )
    return fetch_ngl_js()
