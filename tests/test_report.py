"""The Snakemake HTML report of the smoke run, opened in headless Chromium (Debian's chromium).

Snakemake's report is a JavaScript app with no URL routing: a result is shown only after its
category and its "view" button are clicked. The test injects a small driver script into a copy
of the report that does those clicks for every figure and table, waits for each image to load,
measures the image's size and the share of non-white pixels on a canvas, and writes what it saw
into the page, which Chromium's ``--dump-dom`` prints. A screenshot of the report as opened must
not be blank either.

Skipped with a message where chromium is missing, unless CI is set (then it fails).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from test_workflow import REPO, smoke_args, smoke_workdir, snakemake

FIGURES = ("training time", "file size", "graph metrics", "graph methods", "interpolation error")
TABLES = ("graph", "atomic", "interpolation", "training", "timings", "graph_methods")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

DRIVER = r"""
(function () {
  const report = {categories: {}, errors: []};
  window.addEventListener("error", (e) => report.errors.push(String(e.message)));
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const byText = (t) => Array.from(document.querySelectorAll("a"))
      .find((a) => a.textContent.trim() === t);
  function ink(img) {  // share of non-white pixels, on a canvas at most 400 px wide
    const c = document.createElement("canvas");
    c.width = Math.min(img.naturalWidth, 400);
    c.height = Math.max(1, Math.round(img.naturalHeight * c.width / img.naturalWidth));
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0, c.width, c.height);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] > 0 && (d[i] < 230 || d[i + 1] < 230 || d[i + 2] < 230)) n++;
    }
    return n / (d.length / 4);
  }
  async function run() {
    for (let k = 0; k < 100 && !byText("Workflow"); k++) await sleep(100);
    report.loaded = !!byText("Workflow");
    for (const cat of __CATEGORIES__) {
      let link = byText(cat);
      if (!link && byText("Results")) { byText("Results").click(); await sleep(300); }
      link = byText(cat);
      if (!link) { report.categories[cat] = null; continue; }
      link.click();
      await sleep(300);
      const seen = [];
      const n = document.querySelectorAll("nav table tbody tr").length;
      for (let i = 0; i < n; i++) {
        const row = document.querySelectorAll("nav table tbody tr")[i];
        const label = row.querySelector("td").textContent.trim();
        const eye = row.querySelector('a[iconname="eye"]');
        if (!eye) { seen.push({label, shown: []}); continue; }
        eye.click();
        await sleep(500);
        const main = document.querySelector("#app > div > div.grow") || document.body;
        const shown = [];
        for (const el of main.querySelectorAll("img, iframe")) {
          if (el.tagName === "IMG") {
            if (!el.complete) {
              await new Promise((r) => { el.onload = r; el.onerror = r; setTimeout(r, 3000); });
            }
            shown.push({tag: "img", width: el.naturalWidth, height: el.naturalHeight,
                        ink: el.naturalWidth ? ink(el) : 0});
          } else {
            const src = el.getAttribute("src") || "";
            shown.push({tag: "iframe", src: src.slice(0, 40), bytes: src.length,
                        width: el.clientWidth, height: el.clientHeight});
          }
        }
        seen.push({label, shown});
      }
      report.categories[cat] = seen;
    }
  }
  run().catch((e) => report.errors.push(String(e))).finally(() => {
    const pre = document.createElement("pre");
    pre.id = "report-probe";
    pre.textContent = JSON.stringify(report);
    document.body.appendChild(pre);
  });
})();
"""


def chromium() -> str:
    path = shutil.which("chromium") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None
    )
    if path is None:
        message = (
            "chromium is not installed (Debian: apt-get install -y chromium; "
            "tools/install_system_deps.sh installs it)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_chromium(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@pytest.fixture(scope="module")
def report_html() -> Path:
    chromium()  # skip early, before the (slow) smoke run
    workdir = smoke_workdir()
    path = workdir / "results" / "report.html"
    if not path.exists():
        snakemake(workdir, *smoke_args(), "--report", str(path), timeout=300)
    return path


def probe(report: Path, categories: tuple[str, ...], tmp: Path) -> dict:
    """Open a copy of the report with the driver injected; what the driver saw."""
    text = report.read_text(encoding="utf-8")
    cut = text.rfind("</body>")  # the last one: libraries inside the page contain the string
    assert cut > 0, "the report has no </body>"
    driver = DRIVER.replace("__CATEGORIES__", json.dumps(list(categories)))
    page = tmp / "probe.html"
    page.write_text(text[:cut] + "<script>" + driver + "</script>" + text[cut:], encoding="utf-8")
    proc = run_chromium(
        "--virtual-time-budget=60000", "--window-size=1400,1000", "--dump-dom", page.as_uri()
    )
    m = re.search(r'<pre id="report-probe">(.*?)</pre>', proc.stdout, re.S)
    assert m, (
        f"the driver reported nothing (chromium exit {proc.returncode}): {proc.stderr[-2000:]}"
    )
    return json.loads(html.unescape(m.group(1)))


@pytest.mark.slow
def test_report_holds_the_figures_and_tables(report_html):
    text = report_html.read_text(encoding="utf-8")
    for name in (
        "training_time.png",
        "file_size.png",
        "graph_metrics.png",
        "interpolation_error.png",
        "graph_evaluation.csv",
    ):
        assert name in text, name
    assert report_html.stat().st_size > 500_000  # the PNGs are embedded


@pytest.mark.slow
def test_figures_render_in_chromium(report_html, tmp_path):
    seen = probe(report_html, ("Figures", "Tables"), tmp_path)
    assert seen["loaded"], seen
    assert not seen["errors"], seen["errors"]
    figures = {item["label"]: item["shown"] for item in seen["categories"]["Figures"]}
    assert set(figures) == set(FIGURES), figures
    for label, shown in figures.items():
        imgs = [s for s in shown if s["tag"] == "img"]
        assert len(imgs) == 1, (label, shown)
        img = imgs[0]
        assert img["width"] >= 800 and img["height"] >= 400, (label, img)
        # a drawn plot: axes, points, text (white would be ~0; our figures measure 5-20 %)
        assert 0.02 < img["ink"] < 0.7, (label, img)
    tables = {item["label"]: item["shown"] for item in seen["categories"]["Tables"]}
    assert set(tables) == set(TABLES), tables
    for label, shown in tables.items():
        frames = [s for s in shown if s["tag"] == "iframe"]
        assert frames and frames[0]["src"].startswith("data:text/html"), (label, shown)
        assert frames[0]["bytes"] > 500 and frames[0]["height"] > 100, (label, frames)


@pytest.mark.slow
def test_report_screenshot_is_not_blank(report_html, tmp_path):
    import matplotlib.image as mpimg

    shot = tmp_path / "report.png"
    proc = run_chromium(
        "--virtual-time-budget=20000",
        "--window-size=1400,1000",
        f"--screenshot={shot}",
        report_html.as_uri(),
    )
    assert shot.is_file(), proc.stderr[-2000:]
    rgb = mpimg.imread(shot)[..., :3]
    assert rgb.shape[0] >= 900 and rgb.shape[1] >= 1300
    ink = np.any(rgb < 0.6, axis=-1)  # text, lines, markers
    # the app drew its menu (left) and the workflow page with the rule graph (right):
    # measured 4.8 % and 1.5 % of the pixels; a page that failed to render is white (0 %)
    assert ink[:, :250].mean() > 0.01, ink[:, :250].mean()
    assert ink[:, 300:].mean() > 0.005, ink[:, 300:].mean()


def test_probe_detects_a_missing_figure(tmp_path):
    """The driver's checks can fail: a page without the report app reports nothing loaded."""
    page = tmp_path / "empty.html"
    page.write_text("<!doctype html><html><body><p>no report</p></body></html>")
    seen = probe(page, ("Figures",), tmp_path)
    assert seen["loaded"] is False and seen["categories"]["Figures"] is None


def test_snakemake_report_command_is_documented():
    assert "snakemake --report results/report.html" in (REPO / "docs" / "workflow.md").read_text()
