"""Node boxes as the frontend draws them, read from the frontend itself, and the geometry to check them."""
from __future__ import annotations

APP = "(window.comfyAPI?.app?.app ?? window.app)"

_SETTLED = """
  // read() until it gives the same answer (and ready() holds) at 4 checks in a row, each after a drawn frame and
  // 50 ms: the frontend has drawn what it will draw. Bounded by 10 s (the checks then fail on what was read).
  const settled = async (read, ready = () => true) => {
    let last = null, same = 0, value = null;
    const until = performance.now() + 10000;
    while (performance.now() < until) {
      await new Promise(r => requestAnimationFrame(() => setTimeout(r, 50)));
      value = read();
      const text = JSON.stringify(value);
      same = text === last && ready(value) ? same + 1 : 0;
      last = text;
      if (same >= 3) break;
    }
    return value;
  };
"""
"""Waits for the page to settle instead of for a fixed time: the same reading at 4 checks in a row (about 0.25 s on a
quiet machine; longer where frames come slower, on a loaded one)."""

_MEASURE_BODY = """
  const graph = app.graph;
  const nodes = graph.nodes ?? graph._nodes;
  // fit the whole graph into the canvas, so that every node is drawn (Nodes 2.0 renders what is in view)
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const g of graph.groups ?? graph._groups ?? []) { const b = g._bounding ?? g.bounding;
    x0 = Math.min(x0, b[0]); y0 = Math.min(y0, b[1]); x1 = Math.max(x1, b[0] + b[2]); y1 = Math.max(y1, b[1] + b[3]); }
  for (const n of nodes) { x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 40);
    x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]); }
  const el = app.canvas.canvas, w = el.clientWidth, h = el.clientHeight;
  const [left, top] = [80, 140];
  const scale = Math.min((w - left - 20) / (x1 - x0), (h - top - 20) / (y1 - y0), 1.2);
  app.canvas.ds.scale = scale;
  app.canvas.ds.offset = [-x0 + left / scale, -y0 + top / scale];
  app.canvas.setDirty(true, true);
  const readBoxes = () => nodes.map(n => {
    const rect = el.getBoundingClientRect(), [ox, oy] = app.canvas.ds.offset, scale = app.canvas.ds.scale;
    let b = null, how = "getBounding";
    const e = document.querySelector(`[data-node-id="${n.id}"]`);
    if (e && e.getBoundingClientRect().width > 0) {
      const r = e.getBoundingClientRect();
      b = [(r.left - rect.left) / scale - ox, (r.top - rect.top) / scale - oy, r.width / scale, r.height / scale];
      how = "element";
    } else if (n.getBounding) { b = Array.from(n.getBounding()); }
    else { b = [n.pos[0], n.pos[1] - 30, n.size[0], n.size[1] + 30]; how = "pos/size"; }
    return {id: n.id, type: n.type, title: n.title, box: b, how, below: below[n.id] ?? below[String(n.id)] ?? 0,
            panel: Number(n.__infuPanel?.dataset?.height || 0)};
  });
  // drawn: where the frontend renders nodes as elements (Nodes 2.0), every node has one
  const boxes = await settled(readBoxes, bs => !bs.some(b => b.how === "element") || bs.every(b => b.how === "element"));
  const groups = (graph.groups ?? graph._groups ?? []).map(g => ({title: g.title,
    box: Array.from(g._bounding ?? g.bounding)}));
  const types = globalThis.LiteGraph?.registered_node_types ?? window.comfyAPI?.litegraph?.LiteGraph?.registered_node_types;
  const unknown = nodes.filter(n => types && !types[n.type]).map(n => n.type);
  return {boxes, groups, unknown, view: typeof view === "undefined" ? null : view};
"""
"""Fits the graph into the canvas (Nodes 2.0 renders what is in view), then reads each node's box [x, y, w, h]
in canvas units, title bar included: the node element's box in Nodes 2.0 mode, else LiteGraph's
``getBounding()``; ``below`` (by node id) is passed through; ``panel``: the height the pack's panel already
added to the node (a loader's missing-file marks when the workflow opens). Also the groups' boxes and unknown node types."""

_VIEW_ON_LOAD = """
  app.canvas.setDirty(true, true);
  const view = await settled(() => {
    const c = app.canvas, el = c.canvas, rect = el.getBoundingClientRect(), [s, [ox, oy]] = [c.ds.scale, c.ds.offset];
    const first = (app.graph.groups ?? app.graph._groups ?? [])[0];
    const b = first ? Array.from(first._bounding ?? first.bounding) : null;
    const at = (x, y) => { const px = rect.left + (x + ox) * s, py = rect.top + (y + oy) * s;
      const hit = document.elementFromPoint(px, py);
      return {x: Math.round(px), y: Math.round(py), on: hit === el ? "canvas" : hit ? `${hit.tagName}.${String(hit.className).slice(0, 40)}` : "outside"}; };
    return {scale: s, low_quality: c.low_quality, threshold: c._lowQualityZoomThreshold ?? null,
            group: first?.title ?? null,
            corners: b ? [at(b[0] + 8, b[1] + 8), at(b[0] + b[2] - 8, b[1] + 8), at(b[0] + 8, b[1] + Math.min(b[3], 400) - 8)] : []};
  });
"""
"""Right after a workflow opens, before anything moves the view: the zoom it opened at, whether the canvas draws
text at it (LiteGraph's ``low_quality``), and what is on screen at three corners of its first group (title band
left and right, and lower on its left edge): the canvas, or the frontend's own bars covering it."""

LOAD_AND_MEASURE = ("async ([wf, below]) => { const app = " + APP + "; await app.loadGraphData(wf);"
                    + _SETTLED + _VIEW_ON_LOAD + _MEASURE_BODY + "}")
MEASURE = "async ([below]) => { const app = " + APP + ";" + _SETTLED + _MEASURE_BODY + "}"
SETTLE = ("async () => { const app = " + APP + ";" + _SETTLED + """
  await settled(() => [(app.graph.nodes ?? app.graph._nodes).map(n => [n.id, ...n.pos, ...n.size]),
    [...document.querySelectorAll('.infu-panel')].map(p => [p.dataset.infuType, p.childElementCount, p.scrollHeight]),
    [...document.images].map(i => i.complete && i.naturalWidth), document.querySelectorAll('[role="dialog"]').length,
    app.canvas.ds.scale, ...app.canvas.ds.offset]); }""")


def settle(page) -> None:
    """Wait until the page stops changing: the nodes' places and sizes, the pack's panels, the pictures, the open
    dialogs and the view read the same at 4 checks in a row (instead of a fixed wait)."""
    page.evaluate(SETTLE)


def overlap(a, b) -> float:
    """The area two boxes [x, y, w, h] share."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(w, 0) * max(h, 0)


def inside(inner, outer, slack=1.0) -> bool:
    return (inner[0] >= outer[0] - slack and inner[1] >= outer[1] - slack
            and inner[0] + inner[2] <= outer[0] + outer[2] + slack and inner[1] + inner[3] <= outer[1] + outer[3] + slack)




def clashes(boxes: list[dict], key: str = "box") -> list[str]:
    """Every pair of nodes whose boxes (``key``) overlap, with the area they share."""
    return [f"{a['type']} #{a['id']} and {b['type']} #{b['id']}: {overlap(a[key], b[key]):.0f} px²"
            for i, a in enumerate(boxes) for b in boxes[i + 1:] if overlap(a[key], b[key]) > 0]
