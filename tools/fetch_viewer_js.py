"""Fetch the view pages' JavaScript (NGL, pinned in neural_em/view/assets.py) with npm.

    python tools/fetch_viewer_js.py        # idempotent: does nothing when the pinned copy is there

Keeps ``ngl.js`` and its licence in ``neural_em/view/vendor/`` (ignored by git). Loads
``assets.py`` by path, so it runs before the package is installed (the test command's first
step, ``tools/install_system_deps.sh``, calls it).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "neural_em" / "view" / "assets.py"


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="fetch_viewer_js: %(message)s")
    spec = importlib.util.spec_from_file_location("neural_em_view_assets", ASSETS)
    assert spec is not None and spec.loader is not None
    assets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(assets)
    found = assets.find_ngl_js()
    if found is not None:
        print(f"fetch_viewer_js: ngl {assets.NGL_VERSION} already at {found}")
        return 0
    try:
        path = assets.fetch_ngl_js(assets.VENDOR_DIR)
    except (assets.ViewerAssetError, OSError) as exc:
        print(f"fetch_viewer_js: error: {exc}", file=sys.stderr)
        return 1
    print(f"fetch_viewer_js: ngl {assets.NGL_VERSION} -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
