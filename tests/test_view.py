"""``neural-em view``: the NGL page (drawn offline in headless Chromium, no network request),
the ChimeraX command file (every file it opens exists, paths relative to it), colours, the
page budget, and bad input.

The browser test needs chromium (tools/install_system_deps.sh) and the pinned ngl.js
(tools/fetch_viewer_js.py, which that script runs); each is skipped with a message where
absent, and fails instead where CI is set.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import gemmi
import networkx as nx
import numpy as np
import pytest
from helpers import gaussian_blobs, shared_file

from neural_em.cli.main import main
from neural_em.graph.density_graph import DensityGraph
from neural_em.view.assets import ViewerAssetError, ngl_js
from neural_em.view.chimerax import opened_files
from neural_em.view.scene import BIN_COLOURS, SSE_COLOURS, graph_layer
from neural_em.voxelmap import write_map

#: A path of 12 points 3.6 Å apart: the nodes of the synthetic backbone graph and its blobs.
PATH_A = np.array([[8.0 + 3.6 * k * 0.8, 10.0 + 3.6 * k * 0.6, 15.0] for k in range(12)])
SSE = ["helix"] * 5 + ["strand"] * 4 + ["coil"] * 3


def _missing(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        _missing("chromium is not installed (tools/install_system_deps.sh installs it)")
    return path


@pytest.fixture(scope="module")
def viewer_js() -> Path:
    try:
        return ngl_js(fetch=True)
    except ViewerAssetError as exc:
        _missing(f"the viewer's JavaScript is absent: {exc}")


def _graph(path: Path, positions: np.ndarray, *, method: str, sse: list | None = None) -> Path:
    g = nx.Graph(map_id="synthetic", method=method)
    for k, (x, y, z) in enumerate(positions):
        attrs = {"x": float(x), "y": float(y), "z": float(z), "density": 0.2 + 0.05 * k}
        if sse is not None:
            attrs["sse"] = sse[k]
        g.add_node(k, **attrs)
    for k in range(len(positions) - 1):
        g.add_edge(k, k + 1, length=float(np.linalg.norm(positions[k + 1] - positions[k])))
    graph = DensityGraph(g)
    graph.save(path)
    if len(positions):
        graph.save_as_mmcif(path.with_name(path.name.replace(".graph.json", ".cif")))
    return path


def _model(path: Path) -> Path:
    st = gemmi.Structure()
    model = gemmi.Model(1)
    chain = gemmi.Chain("A")
    for k, (x, y, z) in enumerate(PATH_A + [0.0, 2.5, 2.5]):  # beside the graph's nodes
        res = gemmi.Residue()
        res.name, res.seqid = "ALA", gemmi.SeqId(k + 1, " ")
        atom = gemmi.Atom()
        atom.name, atom.element, atom.pos = "CA", gemmi.Element("C"), gemmi.Position(x, y, z)
        res.add_atom(atom)
        chain.add_residue(res)
    model.add_chain(chain)
    st.add_model(model)
    st.setup_entities()
    st.make_mmcif_document().write_file(str(path))
    return path


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A map of blobs along a path, its model, a backbone graph with sse labels, a study
    graph without, and an empty graph."""
    data = tmp_path / "data"
    data.mkdir()
    vmap = gaussian_blobs(PATH_A, shape_xyz=(40, 36, 30), sigma_A=1.6)
    write_map(data / "blobs.mrc", vmap)
    return {
        "map": data / "blobs.mrc",
        "model": _model(data / "model.cif"),
        "backbone": _graph(data / "spline.backbone.graph.json", PATH_A, method="backbone", sse=SSE),
        "study": _graph(data / "spline.study.graph.json", PATH_A[::2] + 0.5, method="study"),
        "empty": _graph(data / "neural.study.graph.json", np.zeros((0, 3)), method="study"),
    }


def _view(inputs: dict[str, Path], out: Path, *extra: str) -> int:
    args = ["-q", "view", str(inputs["map"]), "--model", str(inputs["model"]), "--contour", "0.3"]
    for key in ("backbone", "study", "empty"):
        args += ["--graph", str(inputs[key])]
    outputs = ["-o", str(out / "blobs.html"), "--cxc", str(out / "blobs.cxc")]
    return main([*args, *outputs, "--pml", str(out / "blobs.pml"), *extra])


# ---------------------------------------------------------------------------- colours
def test_node_colours_by_sse_then_score_then_density(inputs: dict[str, Path]) -> None:
    backbone = graph_layer(inputs["backbone"])
    assert backbone.colour_by == "sse"
    assert backbone.colours() == [SSE_COLOURS[s] for s in SSE]
    study = graph_layer(inputs["study"])
    assert study.colour_by == "density"  # no sse, no score
    colours = study.colours()
    assert colours[0] == BIN_COLOURS[0] and colours[-1] == BIN_COLOURS[-1]  # rising density
    assert graph_layer(inputs["empty"]).empty


# ---------------------------------------------------------------------------- ChimeraX
def test_cxc_opens_only_existing_files_by_relative_paths(
    inputs: dict[str, Path], tmp_path: Path, viewer_js: Path
) -> None:
    out = tmp_path / "results" / "view"
    assert _view(inputs, out) == 0
    cxc = out / "blobs.cxc"
    text = cxc.read_text()
    opened = opened_files(cxc)
    assert len(opened) == 4  # map, model, two non-empty graphs; the empty one is not opened
    assert all(p.is_file() for p in opened), opened
    opens = [line.split()[1] for line in text.splitlines() if line.startswith("open ")]
    assert not any(os.path.isabs(p) for p in opens), opens
    assert "volume #1 level 0.3 " in text
    assert "# graph neural study: empty (no nodes), not opened" in text
    assert f"color #3/A:1-5 {SSE_COLOURS['helix']} target a" in text  # the backbone graph is #3
    # the PyMOL script loads the same files, relative to its own folder
    pml = out / "blobs.pml"
    loads = [
        ln.split()[1].rstrip(",") for ln in pml.read_text().splitlines() if ln.startswith("load ")
    ]
    assert [(out / p).resolve() for p in loads] == [p.resolve() for p in opened]
    assert "color 0xd62728, spline_backbone and ((chain A and resi 1-5))" in pml.read_text()
    # the results folder moved elsewhere: every file the .cxc opens is still found
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path, moved / "copy", ignore=shutil.ignore_patterns("moved"))
    copied = moved / "copy" / "results" / "view" / "blobs.cxc"
    assert all(p.is_file() for p in opened_files(copied))


# ---------------------------------------------------------------------------- browser
def _pixels(png: bytes, left: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))[:, left:].astype(int)


def _ink(png: bytes, left: int) -> tuple[float, int]:
    """Share of non-white pixels right of ``left`` and the number of distinct colours."""
    pixels = _pixels(png, left).reshape(-1, 3)
    ink = np.any(pixels < 235, axis=1).mean()
    return float(ink), len(np.unique(pixels[::7], axis=0))


def test_page_draws_map_and_graphs_offline(
    inputs: dict[str, Path], tmp_path: Path, viewer_js: Path
) -> None:
    from cdp import Browser

    out = tmp_path / "results" / "view"
    assert _view(inputs, out) == 0
    page = out / "blobs.html"
    text = page.read_text()
    assert "neural study: empty (no nodes), not drawn" in text
    assert (
        "http://" not in text.split("<script>")[0] and "https://" not in text.split("<script>")[0]
    )
    with Browser(chromium_path()) as browser:
        browser.open(page.as_uri())
        state = browser.wait_for(
            "(() => { const s = document.getElementById('status'); "
            "return s && s.dataset.state !== 'loading' && s.dataset.state + ': ' + s.textContent; })()"
        )
        assert state.startswith("ready"), state
        left = browser.evaluate("document.getElementById('viewport').getBoundingClientRect().left")
        shown = browser.screenshot()
        ink, colours = _ink(shown, int(left) + 1)
        assert ink > 0.01 and colours > 20, (ink, colours)  # a drawn scene, not blank
        drawn = {}
        for box in ("show-map", "show-graph-0", "show-model"):
            browser.evaluate(f"document.getElementById('{box}').click()")
            browser.evaluate("new Promise((r) => setTimeout(r, 500))")
            hidden = browser.screenshot()
            Path(os.environ.get("VIEW_SHOTS", tmp_path), f"{box}.png").write_bytes(hidden)
            change = np.abs(_pixels(shown, int(left) + 1) - _pixels(hidden, int(left) + 1))
            drawn[box] = float((change.max(axis=2) > 30).mean())  # share of pixels changed
            browser.evaluate(f"document.getElementById('{box}').click()")
            browser.evaluate("new Promise((r) => setTimeout(r, 500))")
        assert all(v > 0.0005 for v in drawn.values()), drawn  # each one drew something
        urls = browser.requested_urls()
    assert urls, "no request recorded at all: the recorder does not work"
    outside = [
        u
        for u in urls
        if not (u.startswith(out.as_uri() + "/") or u.startswith(("data:", "blob:")))
    ]
    assert not outside, outside


# ---------------------------------------------------------------------------- limits
def test_map_over_the_page_budget_is_cropped_and_stepped(
    inputs: dict[str, Path], tmp_path: Path, viewer_js: Path
) -> None:
    out = tmp_path / "view"
    assert _view(inputs, out, "--max-page-voxels", "2000") == 0
    text = (out / "blobs.html").read_text()
    assert "cropped from 40 × 36 × 30" in text
    assert "(step 2)" in text or "(step 3)" in text


def test_view_without_model_or_graphs(inputs: dict[str, Path], tmp_path: Path, viewer_js) -> None:
    out = tmp_path / "view.html"
    assert (
        main(["-q", "view", str(inputs["map"]), "-o", str(out), "--cxc", str(tmp_path / "v.cxc")])
        == 0
    )
    assert "no model" in out.read_text()
    assert [p.name for p in opened_files(tmp_path / "v.cxc")] == ["map.mrc"]


@pytest.mark.parametrize(
    "case, message",
    [
        ("no-map", "no such map file"),
        ("contour", "above the map's maximum"),
        ("graph", "not a JSON density graph"),
        ("model", "model"),
        ("suffix", "must be an .html file"),
        ("exists", "exists"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    case: str, message: str, inputs: dict[str, Path], tmp_path: Path, capsys, viewer_js
) -> None:
    out = tmp_path / "v.html"
    args = ["view", str(inputs["map"]), "-o", str(out)]
    if case == "no-map":
        args[1] = str(tmp_path / "missing.mrc")
    elif case == "contour":
        args += ["--contour", "50"]
    elif case == "graph":
        bad = tmp_path / "bad.graph.json"
        bad.write_text("{not json")
        args += ["--graph", str(bad)]
    elif case == "model":
        bad = tmp_path / "bad.cif"
        bad.write_text("data_x\n_cell.length_a oops\n")
        args += ["--model", str(bad)]
    elif case == "suffix":
        args[-1] = str(tmp_path / "v.png")
    elif case == "exists":
        out.write_text("keep me")
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    if case == "exists":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()


# ---------------------------------------------------------------------------- the demo run
def _load(browser, page: Path) -> str:
    browser.open(page.as_uri())
    return browser.wait_for(
        "(() => { const s = document.getElementById('status'); "
        "return s && s.dataset.state !== 'loading' && s.dataset.state + ': ' + s.textContent; })()"
    )


@pytest.mark.slow
def test_demo_run_view_draws_offline_and_cxc_names_existing_files(viewer_js: Path) -> None:
    """The smoke run of the demo (shared with test_workflow.py): its view page draws the map
    and the graphs in Chromium without any request outside results/, its .cxc opens only
    files that exist, and summary.html links both."""
    from cdp import Browser
    from test_workflow import smoke_workdir

    chromium = chromium_path()
    results = smoke_workdir() / "results"
    page, cxc = results / "view" / "emd_3488.html", results / "view" / "emd_3488.cxc"
    opened = opened_files(cxc)
    assert [p.name for p in opened[:3]] == ["map.mrc", "model.cif", "spline.backbone.cif"]
    assert len(opened) == 6 and all(p.is_file() for p in opened)  # + 2 fields x 2 methods
    with Browser(chromium) as browser:
        state = _load(browser, page)
        assert state.startswith("ready"), state
        left = int(browser.evaluate("document.getElementById('viewport').offsetLeft")) + 1
        shown = browser.screenshot()
        assert _ink(shown, left)[0] > 0.05
        for box in ("show-map", "show-graph-0"):  # the map; the spline backbone graph
            browser.evaluate(f"document.getElementById('{box}').click()")
            browser.evaluate("new Promise((r) => setTimeout(r, 500))")
            change = np.abs(_pixels(shown, left) - _pixels(browser.screenshot(), left))
            assert (change.max(axis=2) > 30).mean() > 0.005, box
            browser.evaluate(f"document.getElementById('{box}').click()")
        urls = browser.requested_urls()
    assert urls and all(u.startswith((results.as_uri() + "/", "data:", "blob:")) for u in urls), (
        urls
    )


# ---------------------------------------------------------------------------- real map
def test_real_map_view(tmp_path: Path, viewer_js: Path) -> None:
    """EMD-3488 at its contour with model 5NI1: cropped from 100³, backbone atoms embedded."""
    mrc = shared_file("emd_3488/emd_3488.mrc")
    model = shared_file("emd_3488/5ni1.cif")
    out = tmp_path / "emd_3488.html"
    args = ["-q", "view", str(mrc), "--model", str(model), "--contour", "0.1", "-o", str(out)]
    assert main([*args, "--cxc", str(tmp_path / "emd_3488.cxc")]) == 0
    text = out.read_text()
    assert "cropped from 100 × 100 × 100" in text
    assert "5ni1.cif: 2296 backbone atoms" in text
    assert 1.5e6 < out.stat().st_size < 20e6
    assert all(p.is_file() for p in opened_files(tmp_path / "emd_3488.cxc"))


def test_help_shows_defaults_and_an_example() -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "neural_em.cli.main", "view", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "example:\n  neural-em view emd_3488.mrc" in result.stdout
    assert "(default: 2000000)" in result.stdout


def test_only_the_pinned_viewer_build_is_used(tmp_path: Path, monkeypatch, viewer_js) -> None:
    from neural_em.view import assets

    fake = tmp_path / "ngl.js"
    fake.write_text("window.NGL = {};  // not the pinned build")
    monkeypatch.setenv(assets.ENV_VAR, str(fake))
    assert assets.find_ngl_js() not in (None, fake)  # the fake is skipped, the real one found
    monkeypatch.setattr(assets, "candidates", lambda: [fake])
    assert assets.find_ngl_js() is None
    with pytest.raises(assets.ViewerAssetError, match="tools/fetch_viewer_js.py"):
        assets.ngl_js(fetch=False)
