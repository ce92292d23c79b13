"""docs/figures/view_emd_3488.png: the view page of EMD-3488 with its backbone graph, as
headless Chromium draws it (the README's screenshot).

    python tools/view_figure.py [--data ../shared/data/emd_3488] [-o docs/figures/view_emd_3488.png]

Runs ``neural-em graph --method backbone`` on the map, then ``neural-em view`` (map at the
EMDB contour 0.1, model 5NI1, the graph), opens the page with the DevTools client of the tests
(tests/cdp.py), waits for the viewer and takes the screenshot.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

READY = (
    "(() => { const s = document.getElementById('status'); "
    "return s && s.dataset.state !== 'loading' && s.dataset.state + ': ' + s.textContent; })()"
)


def main() -> int:
    from cdp import Browser

    from neural_em.cli.main import main as neural_em

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "emd_3488")
    parser.add_argument(
        "-o", "--output", type=Path, default=REPO / "docs/figures/view_emd_3488.png"
    )
    args = parser.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("view_figure: chromium is not installed (tools/install_system_deps.sh)")
    with tempfile.TemporaryDirectory(prefix="view-figure-") as tmp:
        tmp = Path(tmp)
        mrc, model = args.data / "emd_3488.mrc", args.data / "5ni1.cif"
        graph = tmp / "spline.backbone.graph.json"
        common = ["-q", "graph", str(mrc), "--method", "backbone", "--resolution", "3.2"]
        assert neural_em([*common, "--contour", "0.1", "-o", str(graph)]) == 0
        page = tmp / "emd_3488.html"
        view = ["-q", "view", str(mrc), "--model", str(model), "--graph", str(graph)]
        assert neural_em([*view, "--contour", "0.1", "--title", "EMD-3488", "-o", str(page)]) == 0
        with Browser(chromium, width=1100, height=720) as browser:
            browser.open(page.as_uri())
            state = browser.wait_for(READY)
            if not state.startswith("ready"):
                sys.exit(f"view_figure: the page says {state}")
            browser.evaluate("document.getElementById('show-model').click()")
            browser.evaluate("new Promise((r) => setTimeout(r, 800))")
            args.output.write_bytes(browser.screenshot())
    print(f"view_figure: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
