"""The size the real frontend gives each node type the shipped workflows use (title bar excluded, as in
LiteGraph's ``size``), printed as JSON for ``scripts/build_workflows.NODE_SIZES``.

    COMFYUI_DIR=... INFU_FRONTENDS=host,1.58.1+vue python -m tests.browser.measure_sizes

Each node is created by the frontend itself (``LiteGraph.createNode``), added to an empty graph and measured
with ``computeSize()`` and, in Nodes 2.0 mode, the node element's box in canvas units."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tests.browser.conftest import chromium_path, post_setting
from tests.browser.frontends import frontend_list, server_args
from devtools.comfy_env import PACK_ROOT, enable_in_process_comfy

APP = "(window.comfyAPI?.app?.app ?? window.app)"

MEASURE = f"""async (types) => {{
  const app = {APP};
  const LG = globalThis.LiteGraph ?? window.comfyAPI?.litegraph?.LiteGraph;
  app.graph.clear();
  const made = [];
  let x = 0;
  for (const t of types) {{
    const n = LG.createNode(t);
    if (!n) continue;
    n.pos = [x, 100]; x += 800;
    app.graph.add(n);
    made.push([t, n]);
  }}
  app.canvas.ds.scale = 1; app.canvas.ds.offset = [0, 0]; app.canvas.setDirty(true, true);
  await new Promise(r => setTimeout(r, 1500));
  const out = {{}};
  const canvasRect = app.canvas.canvas.getBoundingClientRect();
  for (const [t, n] of made) {{
    const c = n.computeSize();
    const b = n.getBounding ? Array.from(n.getBounding()) : null;
    let dom = null;
    const e = document.querySelector(`[data-node-id="${{n.id}}"]`);
    if (e) {{ const r = e.getBoundingClientRect(); const s = app.canvas.ds.scale;
      dom = [r.width / s, r.height / s]; }}
    out[t] = {{compute: [c[0], c[1]], size: [n.size[0], n.size[1]], bounding: b, dom}};
  }}
  return out;
}}"""


def used_types() -> list[str]:
    types = set()
    for path in (PACK_ROOT / "workflows").glob("*.json"):
        types |= {n["type"] for n in json.loads(path.read_text())["nodes"]}
    return sorted(types)


def main() -> None:
    import sys

    enable_in_process_comfy()
    from playwright.sync_api import sync_playwright

    from devtools.comfyui_gguf import install_comfyui_gguf
    from tests.conftest import start_server

    types = sys.argv[1:] or used_types()
    results = {}
    for frontend in frontend_list():
        base = Path(tempfile.mkdtemp(prefix="infu-measure-"))
        install_comfyui_gguf(base / "custom_nodes")
        server = start_server(base, extra_args=server_args(frontend.split("+")[0]))
        for key, value in (("Comfy.TutorialCompleted", True), ("Comfy.VueNodes.Enabled", frontend.endswith("+vue"))):
            post_setting(server, key, value)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                page.goto(server.url, timeout=120_000)
                page.wait_for_function(f"() => window.InfiniteYou && {APP}?.graph", timeout=120_000)
                page.wait_for_timeout(1500)
                page.keyboard.press("Escape")
                results[frontend] = page.evaluate(MEASURE, types)
                browser.close()
        finally:
            server.stop()
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
