"""Pictures for the template browser and the node help, taken from the real frontend.

    INFU_FIXTURE_CACHE=... .venv/bin/python -m tests.browser.make_pictures

Writes ``workflows/<name>.jpg`` (the template card: the graph, with its one-line description from
``infusenet.catalogue.TEMPLATE_LINES`` written on it; the self-test after a run) and
``web/docs/images/<NodeId>.jpg`` (each node where it sits in a graph, after the self-test ran, showing what
the extension shows). Uses the small generated models and headless Chromium, like the browser tests.
"""
from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path

from PIL import Image

from tests.browser.conftest import build_browser_models, chromium_path, post_setting, write_photos
from devtools.comfy_env import PACK_ROOT, enable_in_process_comfy

APP = "(window.comfyAPI?.app?.app ?? window.app)"
CLIP = {"x": 60, "y": 80, "width": 1520, "height": 900}

FRAME = f"""([ids, withNeighbours, topPad]) => {{
  const app = {APP}; const graph = app.graph; const all = graph.nodes ?? graph._nodes;
  let chosen = all.filter(n => !ids || ids.includes(n.id) || ids.includes(n.type));
  if (withNeighbours) {{
    const keep = new Set(chosen.map(n => n.id));
    for (const n of chosen) {{
      for (const i of n.inputs ?? []) if (i.link != null) keep.add(graph.links[i.link]?.origin_id ?? graph.getLink?.(i.link)?.origin_id);
      for (const o of n.outputs ?? []) for (const l of o.links ?? []) keep.add(graph.links[l]?.target_id ?? graph.getLink?.(l)?.target_id);
    }}
    chosen = all.filter(n => keep.has(n.id));
  }}
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const n of chosen) {{ x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 40);
    x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]); }}
  const pad = topPad ?? 70;
  const [left, top, w, h] = [{CLIP['x']} + 20, {CLIP['y']} + pad, {CLIP['width']} - 40, {CLIP['height']} - pad - 20];
  let scale = Math.min(w / (x1 - x0), h / (y1 - y0), 1.3);
  if (withNeighbours && scale < 0.8) {{  // a help picture: the node large, its neighbours around it
    const n = all.find(n => ids.includes(n.id) || ids.includes(n.type));
    scale = 0.8;
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [-(n.pos[0] + n.size[0] / 2) + (left + w / 2) / scale, -(n.pos[1] - 40) + top / scale];
  }} else {{
    app.canvas.ds.scale = scale;
    app.canvas.ds.offset = [-x0 + (left + (w - (x1 - x0) * scale) / 2) / scale, -y0 + top / scale];
  }}
  app.canvas.setDirty(true, true);
}}"""

BANNER = """(text) => { const b = document.createElement('div'); b.id = 'infu-banner'; b.textContent = text;
  Object.assign(b.style, {position: 'fixed', left: '60px', top: '80px', width: '1520px', padding: '18px 28px', lineHeight: '1.15',
    font: '700 64px system-ui, sans-serif', color: '#fff', background: 'rgba(20,30,60,.92)', zIndex: 10001,
    boxSizing: 'border-box'}); document.body.append(b); }"""


def save(page, path: Path, width: int) -> None:
    page.mouse.move(1590, 990)  # no hover tooltips
    page.wait_for_timeout(600)
    png = page.screenshot(clip=CLIP)
    img = Image.open(io.BytesIO(png)).convert("RGB")
    img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, "JPEG", quality=78, optimize=True)
    print("wrote", path)


def load(page, name: str) -> None:
    wf = json.loads((PACK_ROOT / "workflows" / f"{name}.json").read_text())
    page.evaluate(f"async (wf) => {{ await {APP}.loadGraphData(wf); }}", wf)
    page.wait_for_timeout(500)


def main() -> None:
    enable_in_process_comfy()
    from playwright.sync_api import sync_playwright

    from devtools.comfyui_gguf import install_comfyui_gguf
    from infusenet.catalogue import TEMPLATE_LINES
    from tests.conftest import start_server
    from tests.fixtures.model_set import model_set

    base = Path(tempfile.mkdtemp(prefix="infu-pictures-"))
    build_browser_models(base / "models", model_set())
    write_photos(base / "input")
    install_comfyui_gguf(base / "custom_nodes")
    server = start_server(base)
    for key, value in (("Comfy.TutorialCompleted", True), ("Comfy.Workflow.ShowMissingModelsWarning", False),
                       ("Comfy.Minimap.Visible", False),
                       ("LiteGraph.Canvas.LowQualityRenderingZoomThreshold", 0.1)):
        post_setting(server, key, value)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(server.url, timeout=120_000)
            page.wait_for_function(f"() => window.InfiniteYou && {APP}?.graph", timeout=120_000)
            page.wait_for_timeout(1500)
            page.keyboard.press("Escape")
            for name, line in TEMPLATE_LINES.items():
                if name.startswith("00_"):
                    continue
                load(page, name)
                page.evaluate(FRAME, [None, False, 250])
                page.evaluate(BANNER, f"{name[:2]} · {line}")
                save(page, PACK_ROOT / "workflows" / f"{name}.jpg", 640)
                page.evaluate("() => document.getElementById('infu-banner').remove()")
            load(page, "07_recraft_face_inpaint")
            page.evaluate(FRAME, [["InfU_FaceMask"], True, None])
            save(page, PACK_ROOT / "web" / "docs" / "images" / "InfU_FaceMask.jpg", 900)
            load(page, "00_self_test_untrained_noise")
            page.locator('[data-testid="queue-button"]').first.click()
            page.wait_for_selector(".infu-similarity tr", state="attached", timeout=240_000)
            page.wait_for_function("() => [...document.querySelectorAll('.infu-panel img')].every(i => i.complete)")
            page.evaluate(FRAME, [None, False, 250])
            page.evaluate(BANNER, f"00 · {TEMPLATE_LINES['00_self_test_untrained_noise']}")
            save(page, PACK_ROOT / "workflows" / "00_self_test_untrained_noise.jpg", 640)
            page.evaluate("() => document.getElementById('infu-banner').remove()")
            for node in ("InfU_FaceEncoderLoader", "InfU_InfuseNetLoader", "InfU_IdentityFromImages", "InfU_PoseImage",
                         "InfU_ApplyInfiniteYou", "InfU_IdentitySimilarity"):
                page.evaluate(FRAME, [[node], True, None])
                save(page, PACK_ROOT / "web" / "docs" / "images" / f"{node}.jpg", 900)
            browser.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
