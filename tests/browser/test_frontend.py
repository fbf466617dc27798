"""The pack in a real browser (each shipped workflow's layout and prompt: test_workflows_in_frontend.py): the
self-test runs from the Run button and every node shows what it did (also from the cache), nothing shown is saved in the
workflow, a validation error of ours is visible, the model doctor says what to do for each file, and a preset sets
the numbers it runs."""
from __future__ import annotations

import json
import shutil

import pytest

from tests.browser.conftest import artifacts_dir
from tests.browser.layout import settle
from devtools.comfy_env import PACK_ROOT
from devtools.infusenet_files import FLUX_WIDTH_SINGLE_ONLY_SPEC

SELF_TEST = PACK_ROOT / "workflows" / "00_self_test_untrained_noise.json"
APP = "(window.comfyAPI?.app?.app ?? window.app)"

LOAD = f"""async (wf) => {{
  const app = {APP};
  await app.loadGraphData(wf);
  const types = globalThis.LiteGraph?.registered_node_types ?? window.comfyAPI?.litegraph?.LiteGraph?.registered_node_types;
  const nodes = app.graph.nodes ?? app.graph._nodes;
  return {{count: nodes.length, unknown: nodes.filter(n => types && !types[n.type]).map(n => n.type)}};
}}"""

FIT = f"""(ids) => {{
  const app = {APP};
  const nodes = (app.graph.nodes ?? app.graph._nodes).filter(n => !ids || ids.includes(n.id) || ids.includes(n.type));
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const n of nodes) {{ x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 40);
    x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]); }}
  const el = app.canvas.canvas, w = el.clientWidth, h = el.clientHeight;
  const [left, top] = [80, 140];  // the sidebar and the top bars lie over the canvas
  const scale = Math.min((w - left - 20) / (x1 - x0), (h - top - 20) / (y1 - y0), 1.2);
  app.canvas.ds.scale = scale;
  app.canvas.ds.offset = [-x0 + left / scale, -y0 + top / scale];
  app.canvas.setDirty(true, true);
}}"""


def shot(page, frontend: str, name: str) -> None:
    settle(page)
    page.screenshot(path=str(artifacts_dir() / f"{frontend}-{name}.png"))


def missing_node_dialog(page) -> bool:
    text = page.evaluate("() => document.body.innerText")
    return any(s in text.lower() for s in ("missing node", "nodes are missing", "missing custom node", "not found:"))


def load(page, path) -> dict:
    result = page.evaluate(LOAD, json.loads(path.read_text()))
    settle(page)
    return result


def node_ids(page, node_type: str) -> list[int]:
    return page.evaluate(f"(t) => ({APP}.graph.nodes ?? {APP}.graph._nodes).filter(n => n.type === t).map(n => n.id)", node_type)


DIALOG_CLOSE = ".p-dialog-mask .p-dialog-close-button, .p-dialog-mask button:has(.pi-times)"
"""A dialog's own close button: PrimeVue's, or the x of a frontend's own dialog (the template browser of the
frontend ComfyUI 0.3.75 ships ignores Escape)."""


def close_dialogs(page) -> None:
    """Close the frontend's own dialogs (error reports, missing models, the template browser) left by earlier
    steps: Escape, and the dialog's close button where Escape leaves it open."""
    for attempt in range(20):
        if page.locator(".p-dialog-mask").count() == 0:
            return
        if attempt % 2 and page.locator(DIALOG_CLOSE).count():
            page.locator(DIALOG_CLOSE).last.click()
        else:
            page.keyboard.press("Escape")
        page.wait_for_timeout(300)


def run_from_button(page) -> None:
    page.locator('[data-testid="queue-button"]').first.click()


BEFORE_THE_RUN: dict[str, list] = {}
"""The self-test's node boxes in each frontend as loaded, before it runs."""


def test_self_test_runs_from_the_run_button_and_every_node_shows_what_it_did(page, frontend):
    from tests.browser.layout import MEASURE

    load(page, SELF_TEST)
    BEFORE_THE_RUN[frontend] = page.evaluate(MEASURE, [{}])["boxes"]
    run_from_button(page)
    similarity = '.infu-panel[data-infu-type="InfU_IdentitySimilarity"] .infu-similarity tr'
    page.wait_for_selector(similarity, state="attached", timeout=240_000)
    faces = page.locator('.infu-panel[data-infu-type="InfU_IdentityFromImages"] img.infu-face')
    assert faces.count() == 1
    page.wait_for_function("() => [...document.querySelectorAll('.infu-panel img')].every(i => i.complete && i.naturalWidth > 0)",
                           timeout=30_000)
    assert faces.first.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [768, 512]
    settle(page)  # the panels take their measured size a frame after their pictures arrive
    clipped = page.evaluate("""() => [...document.querySelectorAll('.infu-panel')].filter(p => p.childElementCount)
      .map(p => [p.dataset.infuType, p.scrollHeight, p.clientHeight]).filter(([, content, box]) => content > box + 2)""")
    assert clipped == [], f"{frontend}: panels cut off (content height, box height): {clipped}"
    caption = page.locator('.infu-panel[data-infu-type="InfU_IdentityFromImages"] .infu-caption').first.inner_text()
    assert "face box" in caption and "5 keypoints" in caption
    facts = page.locator('.infu-panel[data-infu-type="InfU_InfuseNetLoader"] .infu-facts').inner_text()
    spec = FLUX_WIDTH_SINGLE_ONLY_SPEC  # the self-test's InfuseNet name links to the fixture set's
    assert "bf16" in facts and f"{spec.num_layers} double + {spec.num_single_layers} single" in facts and "8" in facts
    apply = page.locator('.infu-panel[data-infu-type="InfU_ApplyInfiniteYou"]')
    assert apply.locator("img.infu-mask").count() == 1
    identity_fp = page.locator('.infu-panel[data-infu-type="InfU_IdentityFromImages"] .infu-title').inner_text().split()[1]
    assert identity_fp in apply.inner_text()
    assert page.locator('.infu-panel[data-infu-type="InfU_PoseImage"] img.infu-pose').count() == 1
    assert "detector on CPUExecutionProvider" in page.locator('.infu-panel[data-infu-type="InfU_FaceEncoderLoader"]').inner_text()
    row = page.locator(similarity).first
    assert row.get_attribute("data-band") in ("same", "likely", "unlikely", "no_face")
    assert row.locator(".infu-meaning").inner_text()
    page.evaluate(FIT, ["InfU_InfuseNetLoader", "InfU_IdentityFromImages", "InfU_ApplyInfiniteYou"])
    shot(page, frontend, "selftest-identity-loader-apply")
    page.evaluate(FIT, ["InfU_PoseImage", "InfU_IdentitySimilarity", "SaveImage"])
    shot(page, frontend, "selftest-pose-mask-similarity")

    # nothing the extension shows goes into the saved workflow or the prompt
    saved = page.evaluate(f"() => JSON.stringify({APP}.graph.serialize())")
    assert "infu_report" not in saved and identity_fp not in saved and "/view?" not in saved
    shipped = {n["id"]: n.get("widgets_values") for n in json.loads(SELF_TEST.read_text())["nodes"]}
    for node in json.loads(saved)["nodes"]:
        if str(node["type"]).startswith("InfU_"):
            assert node.get("widgets_values") == shipped[node["id"]], node["type"]
    prompt = page.evaluate(f"async () => JSON.stringify((await {APP}.graphToPrompt()).output)")
    assert "infu_report" not in prompt


def test_after_a_run_what_the_nodes_show_fits_the_room_the_layout_keeps(page, frontend):
    """After the self-test ran, each node (grown by its panel or image preview) still overlaps no other, and
    has grown by no more than the room the workflow builder keeps below it (shown_below), against the same
    workflow as loaded in the same frontend before the run."""
    from scripts.build_workflows import SHOWN_ON_LOAD, shown_below
    from tests.browser.layout import MEASURE, clashes

    workflow = json.loads(SELF_TEST.read_text())
    saved = {str(n["id"]): n for n in workflow["nodes"]}  # newer frontends give ids as strings
    boxes = page.evaluate(MEASURE, [{}])["boxes"]
    overlapping = clashes(boxes)
    assert not overlapping, f"{frontend}: after a run nodes overlap:\n" + "\n".join(overlapping)
    shot(page, frontend, "selftest-after-run")
    assert frontend in BEFORE_THE_RUN, "the self-test did not run in this frontend"
    fresh = {str(b["id"]): b["box"][3] for b in BEFORE_THE_RUN[frontend]}
    grown = {str(b["id"]): round(b["box"][3] - fresh[str(b["id"])]) for b in boxes}
    print(f"\n{frontend}: height each node gained after the self-test ran: "
          + ", ".join(f"{saved[i]['type']} {g}" for i, g in grown.items() if g))
    # a Load Image preview may still be arriving when the graph is first measured: its room is kept too
    too_much = {saved[i]["type"]: g for i, g in grown.items()
                if g > shown_below(saved[i], workflow) + SHOWN_ON_LOAD.get(saved[i]["type"], 0)}
    assert not too_much, f"{frontend}: grew past the room kept below them: {too_much}"


def test_reports_come_back_when_the_nodes_are_cached(page, frontend):
    """Clear what the nodes show, run the same graph again: every node is cached, and shows its report."""
    page.evaluate(f"() => document.querySelectorAll('.infu-panel').forEach(p => p.replaceChildren())")
    assert page.locator(".infu-panel img.infu-face").count() == 0
    run_from_button(page)
    page.wait_for_selector('.infu-panel[data-infu-type="InfU_IdentityFromImages"] img.infu-face', state="attached", timeout=120_000)
    page.wait_for_selector('.infu-panel[data-infu-type="InfU_ApplyInfiniteYou"] img.infu-mask', state="attached", timeout=30_000)
    assert page.locator('.infu-panel[data-infu-type="InfU_IdentitySimilarity"] .infu-similarity tr').count() == 1


LOADER_REPORT = {"kind": "infusenet", "variant": "aes_stage2", "precision": "bf16", "base": "flux1", "double_blocks": 1,
                 "single_blocks": 1, "tokens": 8, "hidden_size": 3072}
SHOWN = """() => [...document.querySelectorAll('.infu-panel')].filter(p => p.childElementCount)
  .map(p => `${p.dataset.infuType} #${p.dataset.infuNode}`)"""


def test_a_runs_reports_stay_with_its_workflow(page, frontend):
    """Queue the self-test, open workflow 01 while it runs: the run's reports (node ids 4, 5, 10, 12 are the same
    node types in both graphs) are not drawn on the other workflow's nodes."""
    load(page, SELF_TEST)
    page.evaluate("""() => { window.__infuDone = false; window.comfyAPI.api.api.addEventListener('execution_success',
      () => { window.__infuDone = true; }, {once: true}); }""")
    with page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST", timeout=60_000):
        run_from_button(page)
    load(page, PACK_ROOT / "workflows" / "01_basic.json")
    page.wait_for_function("() => window.__infuDone", timeout=240_000)
    settle(page)
    assert page.evaluate(SHOWN) == [], f"{frontend}: the self-test's reports drawn on workflow 01"


def test_a_node_id_inside_a_subgraph_is_not_the_root_graphs(page, frontend):
    """``12:5`` names node 5 inside the subgraph of node 12: a report for it never lands on node 5 of the root
    graph; the same report for the root graph's own node does."""
    load(page, SELF_TEST)
    loader = node_ids(page, "InfU_InfuseNetLoader")[0]
    send = f"""(node) => window.comfyAPI.api.api.dispatchCustomEvent('executed', {{prompt_id: 'elsewhere', node,
      display_node: node, output: {{infu_report: [{json.dumps(json.dumps(LOADER_REPORT))}]}}}})"""
    page.evaluate(send, f"999:{loader}")
    settle(page)
    assert page.evaluate(SHOWN) == []
    page.evaluate(send, str(loader))
    settle(page)
    assert page.evaluate(SHOWN) == [f"InfU_InfuseNetLoader #{loader}"]


def test_missing_files_show_on_the_loaders_when_a_workflow_opens(page, frontend, browser_server):
    """Workflow 01 opened on a new install, with nothing in the models folder: both loaders say which files are
    missing, ArcFace's .pth, the projection and antelopev2 included, before anyone presses Run; the doctor, one
    click away, puts what this workflow uses first, FLUX, T5 and the VAE included."""
    from tests.browser.layout import MEASURE, clashes

    models, away = browser_server.base_dir / "models", browser_server.base_dir / "models-away"
    models.rename(away)
    models.mkdir()
    try:
        close_dialogs(page)
        load(page, PACK_ROOT / "workflows" / "01_basic.json")
        said = {}
        for node_type in ("InfU_InfuseNetLoader", "InfU_FaceEncoderLoader"):
            panel = page.locator(f'.infu-panel[data-infu-type="{node_type}"]')
            panel.locator(".infu-errors").wait_for(state="attached", timeout=60_000)
            said[node_type] = panel.locator(".infu-errors").inner_text()
            assert panel.locator("button", has_text="Open the model doctor").count() == 1, node_type
        shot(page, frontend, "missing-files-on-open-01")
        assert "infusenet_aes_bf16.safetensors" in said["InfU_InfuseNetLoader"], said
        assert "image_proj_model.bin" in said["InfU_InfuseNetLoader"], said
        assert "antelopev2" in said["InfU_FaceEncoderLoader"], said
        assert "recognition_arcface_ir_se50.pth" in said["InfU_FaceEncoderLoader"], said
        assert all(not text.startswith("InfiniteYou ") for text in said.values()), said  # the node's name is its title
        assert page.locator(".infu-doctor").count() == 0  # nothing pops up by itself: the marks are on the nodes
        boxes = page.evaluate(MEASURE, [{}])["boxes"]  # the marked loaders grow into the room kept below them
        assert not clashes(boxes), f"{frontend}: with the marks, nodes overlap: {clashes(boxes)}"
        page.evaluate(FIT, ["InfU_InfuseNetLoader", "InfU_FaceEncoderLoader"])
        shot(page, frontend, "missing-files-on-the-loaders-01")
        page.locator('.infu-panel[data-infu-type="InfU_InfuseNetLoader"] button', has_text="Open the model doctor").click()
        summary = page.locator(".infu-doctor .infu-summary")
        summary.wait_for(timeout=60_000)
        assert summary.get_attribute("data-scope") == "workflow" and summary.get_attribute("data-ready") == "false"
        here = page.locator(".infu-doctor .infu-here").inner_text()
        assert "infusenet_aes_bf16.safetensors" in here and "t5xxl_fp16.safetensors" in here, here
        assert "t5xxl_fp8" not in here and "fp8e4m3fn" not in here, here  # alternatives the workflow does not use
        for name in ("flux1-dev.safetensors", "ae.safetensors", "clip_l.safetensors", "antelopev2",
                     "recognition_arcface_ir_se50.pth", "image_proj_model.bin"):
            assert name in here, (name, here)
        fix = page.locator(".infu-doctor .infu-fix-all").first.inner_text()
        assert "t5xxl_fp16.safetensors" in fix and "t5xxl_fp8" not in fix, fix
        shot(page, frontend, "missing-files-doctor-01")
        page.locator(".infu-doctor .infu-close").click()
    finally:
        shutil.rmtree(models)
        away.rename(models)


def test_after_the_self_test_the_doctor_says_its_files_are_in_place(page, frontend):
    load(page, SELF_TEST)
    page.evaluate("() => window.InfiniteYou.openDoctor()")
    summary = page.locator(".infu-doctor .infu-summary")
    summary.wait_for(timeout=60_000)
    text = summary.inner_text()
    assert summary.get_attribute("data-scope") == "workflow" and summary.get_attribute("data-ready") == "true", text
    assert "Not ready" not in text
    page.locator(".infu-doctor .infu-close").click()


def set_widget(page, node_id: int, name: str, value) -> None:
    page.evaluate(f"""([id, name, value]) => {{
      const node = {APP}.graph.getNodeById(id); const w = node.widgets.find(w => w.name === name);
      w.value = value; w.callback?.(value); {APP}.graph.setDirtyCanvas(true, true); }}""", [node_id, name, value])


def test_a_validation_error_of_ours_is_visible(page, frontend):
    load(page, SELF_TEST)
    apply = node_ids(page, "InfU_ApplyInfiniteYou")[0]
    set_widget(page, apply, "start", 0.9)
    set_widget(page, apply, "end", 0.2)
    run_from_button(page)
    error = page.locator(f'.infu-panel[data-infu-node="{apply}"] .infu-errors')
    error.wait_for(state="attached", timeout=60_000)
    assert "start (0.9) is after end (0.2)" in error.inner_text()
    dialog = page.locator(".infu-doctor")
    dialog.wait_for(timeout=30_000)
    text = dialog.inner_text()
    assert text.count("start (0.9) is after end (0.2)") == 1, text
    # a refused value is not a model file: the pop-up says the run was refused, no model doctor in it
    assert dialog.get_attribute("data-infu-dialog") == "refused" and "model doctor" not in text.lower(), text
    assert page.locator(f'.infu-panel[data-infu-node="{apply}"] button').count() == 0
    shot(page, frontend, "validation-error-dialog")
    page.locator(".infu-doctor .infu-close").click()
    close_dialogs(page)
    page.evaluate(FIT, [apply])
    shot(page, frontend, "validation-error-on-node")


def test_a_broken_model_file_opens_the_doctor_at_run_time_validation(page, frontend):
    load(page, SELF_TEST)
    loader = node_ids(page, "InfU_InfuseNetLoader")[0]
    set_widget(page, loader, "infusenet_name", "aes_stage2/infusenet_aes_fp8e4m3fn.safetensors")
    run_from_button(page)
    page.locator(".infu-doctor .infu-summary").wait_for(timeout=60_000)
    text = page.locator(".infu-doctor").inner_text()
    assert "truncated" in text and "curl -L --fail -o infiniteyou/aes_stage2/infusenet_aes_fp8e4m3fn.safetensors" in text
    # one problem, said once: the node's name heads it once (the server's message starts with it too), and the
    # projection beside the file, which is there, is no second item
    refused = page.locator(".infu-doctor .infu-errors").inner_text()
    title = page.evaluate(f"(id) => {APP}.graph.getNodeById(id).title", loader)
    assert refused.startswith(f"{title}: ") and refused.count("InfiniteYou InfuseNet Loader") <= 1, refused
    assert "1 model file cannot be used" in refused and "\n2. " not in refused and "image_proj_model" not in refused, refused
    page.locator(".infu-doctor .infu-close").click()


def test_the_model_doctor_says_what_to_do_for_each_file(page, frontend):
    load(page, SELF_TEST)
    loader = node_ids(page, "InfU_InfuseNetLoader")[0]
    options = page.evaluate(f"""(id) => {{ const n = {APP}.graph.getNodeById(id); const o = [];
      n.getExtraMenuOptions?.({APP}.canvas, o); return o.filter(Boolean).map(x => x.content); }}""", loader)
    assert "InfiniteYou: model doctor…" in options
    page.evaluate(f"() => {APP}.graph.clear()")  # no workflow open: the doctor reports on every file the pack can use
    page.evaluate("() => window.InfiniteYou.openDoctor()")
    page.locator(".infu-doctor .infu-summary").wait_for(timeout=60_000)
    dialog = page.locator(".infu-doctor")
    summary = page.locator(".infu-doctor .infu-summary")
    assert summary.get_attribute("data-ready") == "false" and summary.get_attribute("data-scope") == "pack"
    corrupt = dialog.locator('.infu-entry[data-key="infusenet_aes_fp8"]')
    assert corrupt.get_attribute("data-status") == "broken"
    assert "truncated" in corrupt.inner_text() and "curl" in corrupt.locator(".infu-shell").inner_text()
    t5 = dialog.locator('.infu-entry[data-key="t5_fp16"]')
    assert t5.get_attribute("data-status") == "missing"
    assert "ComfyUI/models/text_encoders/" in t5.inner_text()
    assert "https://huggingface.co/comfyanonymous/flux_text_encoders" in t5.inner_text()
    fix_all = dialog.locator(".infu-fix-all").inner_text()
    assert "t5xxl_fp16.safetensors" in fix_all
    for entry in dialog.locator(".infu-entry").all():
        if entry.get_attribute("data-status") != "ok":
            assert entry.locator(".infu-fix").count() == 1, entry.inner_text()
    assert dialog.locator('.infu-entry[data-key="arcface"]').get_attribute("data-status") == "ok"
    shot(page, frontend, "model-doctor")
    page.locator(".infu-doctor .infu-close").click()


TITLE_BAR = f"""(id) => {{
  const app = {APP}, node = app.graph.getNodeById(id);
  const element = document.querySelector(`[data-node-id="${{id}}"]`);
  if (element && element.getBoundingClientRect().width > 0) {{  // Nodes 2.0: the node's own element
    const r = element.getBoundingClientRect(); return [r.left + 60, r.top + 12]; }}
  const rect = app.canvas.canvas.getBoundingClientRect(), [ox, oy] = app.canvas.ds.offset, s = app.canvas.ds.scale;
  return [rect.left + (node.pos[0] + 60 + ox) * s, rect.top + (node.pos[1] - 15 + oy) * s];
}}"""


def test_a_right_click_on_a_loader_opens_the_doctor(page, frontend):
    """As a person does it: the mouse's right button on the InfuseNet Loader's title bar, then the menu entry."""
    close_dialogs(page)
    load(page, SELF_TEST)
    loader = node_ids(page, "InfU_InfuseNetLoader")[0]
    page.evaluate(FIT, [loader])
    settle(page)
    x, y = page.evaluate(TITLE_BAR, loader)
    page.mouse.click(x, y, button="right")
    entry = page.get_by_text("InfiniteYou: model doctor…", exact=True).first
    entry.wait_for(timeout=10_000)
    shot(page, frontend, "right-click-menu")
    entry.click()
    page.locator(".infu-doctor .infu-summary").wait_for(timeout=60_000)
    page.locator(".infu-doctor .infu-close").click()


def test_a_run_that_fails_on_a_model_file_opens_the_doctor(page, frontend):
    """The server's execution_error for one of our nodes naming a model file (as the socket delivers it)."""
    page.evaluate("""() => window.comfyAPI.api.api.dispatchCustomEvent('execution_error', {prompt_id: 'x', node_id: '5',
      node_type: 'InfU_FaceEncoderLoader', exception_message: 'InfiniteYou Face Encoder Loader: The face detector '
      + 'models/insightface/models/antelopev2/scrfd_10g_bnkps.onnx is missing.', exception_type: 'InfiniteYouNodeError',
      traceback: [], current_inputs: {}, current_outputs: {}})""")
    page.locator(".infu-doctor .infu-summary").wait_for(timeout=60_000)
    said = page.locator(".infu-doctor .infu-errors").inner_text()
    assert "scrfd_10g_bnkps.onnx is missing" in said and said.count("InfiniteYou Face Encoder Loader") == 1, said
    page.locator(".infu-doctor .infu-close").click()


def test_template_cards_show_thumbnails_and_a_description(page, frontend):
    """Each of the pack's cards in the template browser shows its picture and, under its title, what the workflow
    does (the frontend alone repeats the file name there)."""
    from infusenet.catalogue import TEMPLATE_LINES

    close_dialogs(page)
    page.get_by_text("Templates", exact=True).first.click()
    page.locator('[role="dialog"]').get_by_text("infiniteyou-studio", exact=True).first.click()
    for name, line in TEMPLATE_LINES.items():
        card = page.locator(f'[data-testid="template-workflow-{name}"]').first
        card.get_by_text(name, exact=True).first.wait_for(timeout=30_000)
        card.get_by_text(line, exact=True).first.wait_for(timeout=10_000)
        card.scroll_into_view_if_needed()  # pictures load when their card comes into view
        card.locator("img").first.wait_for(timeout=10_000)
        assert card.locator("img").first.get_attribute("alt") == name
        texts = card.evaluate("(c) => [...c.querySelectorAll('h3, p')].map(e => e.textContent.trim())")
        assert texts == [name, line], texts  # the title, then the line: the spaced-out name is gone
        box, picture = card.bounding_box(), card.locator("img").first.bounding_box()
        assert picture["width"] > 100 and box["height"] > picture["height"] + 30, (box, picture)
    settle(page)
    shot(page, frontend, "template-cards")
    close_dialogs(page)
    assert page.locator(".p-dialog-mask").count() == 0, "the template browser stays open"


PRESET_STATE = f"""(id) => {{
  const node = {APP}.graph.getNodeById(id);
  const value = (name) => node.widgets.find(w => w.name === name).value;
  return {{preset: value("preset"), strength: value("strength"), start: value("start"), end: value("end")}};
}}"""


@pytest.mark.parametrize("workflow, node_type", [
    ("00_self_test_untrained_noise.json", "InfU_ApplyInfiniteYou"),
    ("13_likeness_blend_sim_aes.json", "InfU_ApplyLikenessBlend"),
])
def test_a_preset_shows_the_numbers_it_runs_and_an_edit_by_hand_makes_it_custom(page, frontend, workflow, node_type):
    """Choosing a preset puts the server's numbers in strength/start/end; changing one of them by hand turns the
    preset to custom (so the prompt runs what the node shows); a saved preset shows its own numbers on load."""
    from infusenet.likeness import CUSTOM, PRESETS

    close_dialogs(page)
    load(page, PACK_ROOT / "workflows" / workflow)
    node = node_ids(page, node_type)[0]
    for name, values in PRESETS.items():
        if values is None:
            continue
        set_widget(page, node, "strength", 0.55)  # something no preset has
        set_widget(page, node, "preset", name)
        assert page.evaluate(PRESET_STATE, node) == {"preset": name, **values}, (frontend, name)
        prompt = page.evaluate(f"async () => (await {APP}.graphToPrompt()).output")
        sent = prompt[str(node)]["inputs"]
        assert (sent["preset"], sent["strength"], sent["start"], sent["end"]) == (
            name, values["strength"], values["start"], values["end"])
    set_widget(page, node, "strength", 0.8)
    state = page.evaluate(PRESET_STATE, node)
    assert state["preset"] == CUSTOM and state["strength"] == pytest.approx(0.8), state

    reference = next(n for n, v in PRESETS.items() if v and v["start"] == 0.0)
    saved = page.evaluate(f"""async ([id, preset]) => {{
      const app = {APP}; const node = app.graph.getNodeById(id);
      const wf = (await app.graphToPrompt()).workflow; const saved = wf.nodes.find(n => String(n.id) === String(id));
      const at = (name) => node.widgets.findIndex(w => w.name === name);
      saved.widgets_values[at("preset")] = preset; saved.widgets_values[at("strength")] = 0.3;
      saved.widgets_values[at("start")] = 0.6;
      return wf; }}""", [node, reference])
    page.evaluate(f"async (wf) => {{ await {APP}.loadGraphData(wf); }}", saved)
    settle(page)
    assert page.evaluate(PRESET_STATE, node) == {"preset": reference, **PRESETS[reference]}
