"""The view page: one self-contained HTML file showing a :class:`~neural_em.view.scene.Scene`
in NGL (the pinned ``ngl.js`` of :mod:`neural_em.view.assets`, embedded).

Everything the page shows is inside it (the viewer, the map copy and the model as gzip-
compressed base64, the graphs as JSON), so it opens offline from any folder, and its
Content-Security-Policy forbids every request to the network. The page sets
``#status[data-state]`` to ``ready`` once the scene is drawn, or ``error`` with the message.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import os
from pathlib import Path
from typing import Any

from neural_em.atomic import atomic_write_text
from neural_em.view.assets import NGL_VERSION, ngl_js
from neural_em.view.scene import MAP_COLOUR, MODEL_COLOUR, Scene, default_visible

#: Default page budget (bytes); a page over it is still written, with a warning in its log.
PAGE_BUDGET_BYTES = 20_000_000

#: No request leaves the page: data and blob URLs only (NGL's workers are blob URLs).
CSP = (
    "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; "
    "img-src data: blob:; worker-src blob:; connect-src data: blob:; font-src data:"
)

STYLE = """
html,body{margin:0;height:100%;font-family:sans-serif;font-size:13px}
#layout{display:flex;height:100%}
#side{width:300px;overflow-y:auto;padding:8px 12px;border-right:1px solid #ddd;box-sizing:border-box}
#viewport{flex:1;position:relative;min-width:0}
h1{font-size:16px;margin:4px 0 8px}
h2{font-size:13px;margin:12px 0 4px}
label{display:block;margin:3px 0}
.note{color:#555;font-size:12px}
.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;border:1px solid #888}
.legend{margin:0 0 4px 20px;font-size:12px}
#status{font-size:12px;margin-top:10px}
#status[data-state=error]{color:#b00}
input[type=range]{width:100%}
"""

SCRIPT = r"""
(function () {
  "use strict";
  const status = document.getElementById("status");
  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }
  window.addEventListener("error", (e) => setStatus("error", "error: " + e.message));
  function bytes(b64) {
    const s = atob(b64);
    const a = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) a[i] = s.charCodeAt(i);
    return a;
  }
  function rgb(hex) {
    const v = parseInt(hex.slice(1), 16);
    return [((v >> 16) & 255) / 255, ((v >> 8) & 255) / 255, (v & 255) / 255];
  }
  function toggle(id, comp) {
    const box = document.getElementById(id);
    if (!box) return;
    comp.setVisibility(box.checked);
    box.addEventListener("change", () => comp.setVisibility(box.checked));
  }
  try {
    if (!window.NGL) throw new Error("the NGL viewer did not load");
    const data = JSON.parse(document.getElementById("scene-data").textContent);
    const stage = new NGL.Stage("viewport", {backgroundColor: "white", tooltip: true});
    window.addEventListener("resize", () => stage.handleResize());
    const jobs = [];
    const mapFile = new File([bytes(data.map.b64)], data.name + ".mrc.gz");
    jobs.push(stage.loadFile(mapFile, {name: "map"}).then((comp) => {
      const rep = comp.addRepresentation("surface", {
        isolevelType: "value", isolevel: data.map.contour, color: data.map.colour,
        opacity: 0.5, depthWrite: false, smooth: 0, wireframe: true,
      });
      const slider = document.getElementById("level");
      const number = document.getElementById("level-value");
      const set = (v) => {
        if (!isFinite(v)) return;
        slider.value = v;
        number.value = v;
        rep.setParameters({isolevel: v});
      };
      const mesh = document.getElementById("map-mesh");
      mesh.addEventListener("change", () => rep.setParameters({wireframe: mesh.checked}));
      slider.addEventListener("input", () => set(parseFloat(slider.value)));
      number.addEventListener("change", () => set(parseFloat(number.value)));
      toggle("show-map", comp);
    }));
    if (data.model) {
      const modelFile = new File([bytes(data.model.b64)], "model.cif.gz");
      jobs.push(stage.loadFile(modelFile, {name: "model"}).then((comp) => {
        comp.addRepresentation(data.model.style, {color: data.model.colour});
        toggle("show-model", comp);
      }));
    }
    data.graphs.forEach((g, k) => {
      if (!g.positions.length) return;
      const n = g.positions.length / 3;
      const colours = new Float32Array(3 * n);
      for (let i = 0; i < n; i++) colours.set(rgb(g.palette[g.index[i]]), 3 * i);
      const shape = new NGL.Shape(g.label);
      shape.addBuffer(new NGL.SphereBuffer({
        position: new Float32Array(g.positions), color: colours,
        radius: new Float32Array(n).fill(g.radius),
      }));
      const m = g.edges.length / 2;
      if (m > 0) {
        const p1 = new Float32Array(3 * m), p2 = new Float32Array(3 * m);
        const c1 = new Float32Array(3 * m), c2 = new Float32Array(3 * m);
        for (let e = 0; e < m; e++) {
          const a = g.edges[2 * e], b = g.edges[2 * e + 1];
          p1.set(g.positions.slice(3 * a, 3 * a + 3), 3 * e);
          p2.set(g.positions.slice(3 * b, 3 * b + 3), 3 * e);
          c1.set(colours.subarray(3 * a, 3 * a + 3), 3 * e);
          c2.set(colours.subarray(3 * b, 3 * b + 3), 3 * e);
        }
        shape.addBuffer(new NGL.CylinderBuffer({
          position1: p1, position2: p2, color: c1, color2: c2,
          radius: new Float32Array(m).fill(g.radius / 3),
        }));
      }
      const comp = stage.addComponentFromObject(shape);
      comp.addRepresentation("buffer");
      toggle("show-graph-" + k, comp);
    });
    Promise.all(jobs).then(() => {
      stage.autoView();
      const done = () => {
        if (stage.tasks.count > 0) { setTimeout(done, 100); return; }
        stage.viewer.requestRender();
        requestAnimationFrame(() => requestAnimationFrame(() => setStatus("ready", "ready")));
      };
      done();
    }).catch((e) => setStatus("error", "error: " + (e && e.message ? e.message : e)));
    window.stage = stage;
  } catch (e) {
    setStatus("error", "error: " + e.message);
  }
})();
"""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def scene_data(scene: Scene, *, visible_graphs: set[int] | None = None) -> dict[str, Any]:
    """The JSON the page's script reads."""
    pm = scene.page_map
    model = None
    if scene.model_text is not None:
        model = {
            "b64": _b64(gzip.compress(scene.model_text.encode("utf-8"), mtime=0)),
            "colour": MODEL_COLOUR,
            "style": "cartoon",
        }
    graphs = []
    for g in scene.graphs:
        graphs.append(
            {
                "label": g.label,
                "positions": [round(float(v), 2) for v in g.positions.ravel()],
                "edges": [int(v) for v in g.edges.ravel()],
                "palette": g.palette,
                "index": [int(v) for v in g.colour_index],
                "radius": 0.7 if g.method == "backbone" else 0.5,
            }
        )
    return {
        "name": scene.title,
        "map": {"b64": _b64(pm.mrc_gz), "contour": pm.contour, "colour": MAP_COLOUR},
        "model": model,
        "graphs": graphs,
    }


def _controls(scene: Scene, visible: set[int]) -> str:
    esc = html.escape
    pm = scene.page_map
    lo, hi = pm.value_range
    step = (hi - lo) / 1000 if hi > lo else 1.0
    parts = [
        f"<h1>{esc(scene.title)}</h1>",
        "<h2>Map</h2>",
        f"<label><input type='checkbox' id='show-map' checked>"
        f"<span class='swatch' style='background:{MAP_COLOUR}'></span>"
        f"{esc(scene.map_source.name)}</label>",
        f"<label>level <input type='number' id='level-value' value='{pm.contour:.6g}' "
        f"step='{step:.3g}' style='width:90px'> (contour {pm.contour:.4g})</label>",
        f"<input type='range' id='level' min='{lo:.6g}' max='{hi:.6g}' step='{step:.3g}' "
        f"value='{pm.contour:.6g}'>",
        "<label><input type='checkbox' id='map-mesh' checked>mesh (off: surface)</label>",
        f"<p class='note' id='map-note'>Shown: {esc(pm.note)}</p>",
        "<h2>Model</h2>",
    ]
    if scene.model_text is not None:
        parts.append(
            f"<label><input type='checkbox' id='show-model' checked>"
            f"<span class='swatch' style='background:{MODEL_COLOUR}'></span>"
            f"cartoon</label><p class='note'>{esc(scene.model_note)}</p>"
        )
    else:
        parts.append(f"<p class='note' id='model-note'>{esc(scene.model_note)}</p>")
    parts.append("<h2>Graphs</h2>")
    if not scene.graphs:
        parts.append("<p class='note'>no graph</p>")
    for k, g in enumerate(scene.graphs):
        counts = f"{len(g.positions)} nodes, {len(g.edges)} edges"
        if g.empty:
            parts.append(f"<p class='graph-empty'>{esc(g.label)}: empty (no nodes), not drawn</p>")
            continue
        checked = " checked" if k in visible else ""
        parts.append(
            f"<label><input type='checkbox' id='show-graph-{k}'{checked}>"
            f"{esc(g.label)} <span class='note'>({esc(counts)})</span></label>"
        )
        by = {"sse": "secondary structure", "score": "node score", "density": "node density"}
        parts.append(f"<div class='legend'>colour: {esc(by.get(g.colour_by, 'one colour'))}<br>")
        parts += [
            f"<span class='swatch' style='background:{c}'></span>{esc(t)}<br>" for t, c in g.legend
        ]
        parts.append("</div>")
    parts.append(
        f"<p class='note'>Drawn with NGL {NGL_VERSION} (MIT licence), embedded in this page: "
        "it opens offline. Mouse: left drag rotates, right drag moves, wheel zooms. "
        "The same scene in ChimeraX: open the .cxc file beside this page.</p>"
        "<div id='status' data-state='loading'>loading…</div>"
    )
    return "".join(parts)


def render_page(scene: Scene, *, js: str | None = None) -> str:
    """The page's HTML text (``js``: the viewer's source; default the pinned ``ngl.js``)."""
    if js is None:
        js = ngl_js().read_text(encoding="utf-8")
    if "</script" in js.lower():
        raise ValueError("the viewer's JavaScript contains '</script': cannot be inlined")
    visible = default_visible(scene)
    data = json.dumps(scene_data(scene), separators=(",", ":")).replace("</", "<\\/")
    title = f"{scene.title}: map, model and graphs (neural-em view)"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<div id='layout'><div id='side'>{_controls(scene, visible)}</div>"
        "<div id='viewport'></div></div>"
        f"<script id='scene-data' type='application/json'>{data}</script>"
        f"<script>{js}</script><script>{SCRIPT}</script></body></html>\n"
    )


def write_page(
    scene: Scene, path: str | os.PathLike, *, overwrite: bool = False, js: str | None = None
) -> Path:
    """Write the view page atomically; returns its path."""
    text = render_page(scene, js=js)
    return atomic_write_text(path, text, overwrite=overwrite)
