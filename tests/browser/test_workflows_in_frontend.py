"""Every shipped workflow as a person meets it: loaded in each frontend under test, read back from the
frontend itself, and run from the frontend's own prompt.

* Layout: each node's box as the frontend draws it (LiteGraph ``getBounding()``, title bar included; in
  Nodes 2.0 mode the node element's box, converted to canvas units), grown by the room the pack's panels
  take under it after a run (``shown_below``), overlaps no other node and lies inside a group.
* Prompt: ``app.graphToPrompt()`` gives the prompt. On the first frontend of ``INFU_FRONTENDS`` (the
  host's own) it runs, with the test-only substitutions of tests/test_workflows.py, on the test server with
  the small-model set (its FLUX.1 512 wide where the host reads the width from the weights: tests/conftest.py,
  ``server_models``; ``bases_server``, 3072 wide, for the GGUF, Fill and Kontext workflows and there for
  ``FULL_WIDTH_RUNS``), and an image comes out (a workflow the host cannot run, FLUX.2 [klein] on ComfyUI 0.3.75,
  is refused naming its version); on the other frontends it must equal the first frontend's prompt. The pack's converter
  (``devtools.workflow_api.to_api``) must give the same prompt (see :func:`comparable`).
* Every node type is known to the frontend and no missing-node dialog opens.
* A screenshot of each loaded workflow, fitted to the graph, goes to the artifacts folder.
* After a run: the workflows whose nodes show what the self-test (tests/browser/test_frontend.py) has not
  (Face Mask, Face Regions, PreviewAny, the likeness blend) run on the browser's own server (the same model files)
  instead, their progress going to the page as if it had queued them; the other frontends are shown the same run
  (the ``executed`` messages the first frontend's page received, and the images they name), so each prompt runs
  once per host. Then no node overlaps another and none has grown past the room kept below it.
* The workflows come grouped by the server that runs them (``RUN_ORDER``); side by side, a server lets go of its
  models when the next workflow runs on another (``switch_to``).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from devtools.comfy_env import PACK_ROOT
from devtools.workflow_api import to_api
from scripts.build_workflows import SHOWN_ON_LOAD, shown_below
from tests.browser.conftest import artifacts_dir
from tests.browser.test_frontend import missing_node_dialog
from tests.browser.frontends import frontend_list
from tests.browser.layout import LOAD_AND_MEASURE, MEASURE, clashes, inside, overlap
from tests.fixtures.model_set import host_reads_flux_width
from tests.test_workflows import (ALL_WORKFLOWS, expect_failure, for_test_host, keep_for_host_comparison, refusal_here,
                                  run_ok, saved_pixels, uses_other_bases, write_photos)

APP = "(window.comfyAPI?.app?.app ?? window.app)"
PROMPTS: dict[tuple[str, str], dict] = {}
"""The frontend's prompt for each (frontend, workflow), kept to compare the other frontends with the first."""
SECONDS: dict[str, float] = {}

def comparable(prompt: dict, object_info: dict) -> dict:
    """A prompt with what legitimately differs between converters taken out: ``_meta`` (display titles), key
    order, and inputs the node's schema does not declare, which the server ignores: widgets the frontend adds
    on its own (PreviewAny's ``preview`` text box, sent as ``""``)."""
    def declared(node: dict) -> set[str]:
        spec = object_info[node["class_type"]]["input"]
        return {*spec.get("required", {}), *spec.get("optional", {})}

    return {k: {"class_type": v["class_type"],
                "inputs": {name: value for name, value in sorted(v["inputs"].items()) if name in declared(v)}}
            for k, v in sorted(prompt.items())}


@pytest.fixture(scope="module")
def photos_on_run_servers(request):
    """The test photos (synthetic faces the test detector finds) on the servers that run the prompts."""
    servers = {}
    for path in ALL_WORKFLOWS:
        name = prompt_server(path)
        if name not in servers:
            servers[name] = request.getfixturevalue(name)
            write_photos(servers[name].base_dir / "input")
    return servers


SHOWN_AFTER_A_RUN = ["07_recraft_face_inpaint", "12_two_people_auto_regions", "13_likeness_blend_sim_aes"]
"""Workflows with the nodes whose room after a run the self-test does not measure: Face Mask (07), Face Regions
and PreviewAny (12), the likeness blend (13). They run on the browser's own server in every frontend."""
SHOWS_WHAT_IT_DID = {"InfU_FaceMask", "InfU_FaceRegions", "InfU_ApplyLikenessBlend"}


@pytest.fixture(scope="module")
def test_photo_names(browser_server, tmp_path_factory):
    """The synthetic test faces in the browser server's input/ as ``test-<example name>``: the example photos
    there are real faces, which the test detector does not know."""
    folder = write_photos(tmp_path_factory.mktemp("test-photos"))
    names = {}
    for photo in folder.iterdir():
        (browser_server.base_dir / "input" / f"test-{photo.name}").write_bytes(photo.read_bytes())
        names[photo.name] = f"test-{photo.name}"
    return names


RUNS: dict[str, tuple[list[dict], Path]] = {}
"""What the page of the first frontend received from each run (its ``executed`` messages) and a copy of the image
files those name, for the other frontends to be shown the same run without running it again."""
RECORD_EXECUTED = """() => { window.__infuExecuted = [];
  if (!window.__infuRecording) { window.__infuRecording = true;
    window.comfyAPI.api.api.addEventListener('executed', e => window.__infuExecuted.push(e.detail)); } }"""


def copy_shown_files(executed: list[dict], source: Path, target: Path) -> None:
    """Copy the files that ``executed`` messages show (``<type>/<subfolder>/<filename>`` under a base folder)
    from the base folder ``source`` to ``target``."""
    for detail in executed:
        for items in detail["output"].values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, dict) and {"filename", "type"} <= item.keys():
                    file = Path(item["type"], item.get("subfolder", ""), item["filename"])
                    (target / file).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source / file, target / file)


def run_for_the_page(page, frontend, server, photo_names, workflow, runnable, loaded_boxes, name, tmp_path_factory):
    """Show the page a run of ``runnable`` on the browser's server, then check that no node overlaps another and none
    has grown past the room the layout keeps below it. The first frontend runs it with the page as its client (it
    gets the progress and what each node shows, as if it had queued the prompt), and its ``executed`` messages and
    the images they name are kept; the other frontends get those same messages (the images copied into
    their server's folders), so the prompt runs once per host. Returns the run, or None where it was replayed."""
    saved = {str(n["id"]): n for n in workflow["nodes"]}
    before = {str(b["id"]): b["box"][3] for b in loaded_boxes}
    result = None
    if frontend == frontend_list()[0]:
        runnable = json.loads(json.dumps(runnable))
        for node in runnable.values():
            if node["class_type"] == "LoadImage":
                node["inputs"]["image"] = photo_names[node["inputs"]["image"]]
        client = page.evaluate("() => window.comfyAPI.api.api.clientId")
        assert client, f"{frontend}: no client id on the page"
        page.evaluate(RECORD_EXECUTED)
        result = server.wait(server.submit(runnable, client_id=client), timeout=600)
        assert result.status == "success", f"{result.error}\n{server.log()[-4000:]}"
        shown = {k for k, v in result.history.get("outputs", {}).items() if v}
        page.wait_for_function("(n) => new Set(window.__infuExecuted.map(d => d.node)).size >= n", arg=len(shown),
                               timeout=60_000)
        executed = page.evaluate("() => window.__infuExecuted")
        keep = tmp_path_factory.mktemp(f"shown-{name}")
        copy_shown_files(executed, server.base_dir, keep)
        RUNS[name] = (executed, keep)
    else:
        assert name in RUNS, f"{frontend_list()[0]} did not run {name}"
        executed, kept_files = RUNS[name]
        copy_shown_files(executed, kept_files, server.base_dir)
        page.evaluate("(all) => all.forEach(d => window.comfyAPI.api.api.dispatchCustomEvent('executed', d))", executed)
    for node_type in SHOWS_WHAT_IT_DID & {n["type"] for n in workflow["nodes"]}:  # the reports reached the page
        page.wait_for_selector(f'.infu-panel[data-infu-type="{node_type}"] > *', state="attached", timeout=60_000)
    page.wait_for_function("() => [...document.querySelectorAll('img')].every(i => i.complete)", timeout=30_000)
    page.wait_for_timeout(1000)  # image previews drawn on the canvas (not <img> elements) settle
    after = page.evaluate(MEASURE, [{}])["boxes"]
    page.screenshot(path=str(artifacts_dir() / f"{frontend}-after-run-{name}.png"))
    overlapping = clashes(after)
    assert not overlapping, f"{frontend}: after {name} ran, nodes overlap:\n" + "\n".join(overlapping)
    grown = {str(b["id"]): round(b["box"][3] - before[str(b["id"])]) for b in after}
    print(f"\n{frontend} {name}: height gained after the run: "
          + ", ".join(f"{saved[i]['type']} {g}" for i, g in grown.items() if g))
    # a Load Image preview may still be arriving when the graph is first measured: its room is kept too
    kept = {i: shown_below(n, workflow) + SHOWN_ON_LOAD.get(n["type"], 0) for i, n in saved.items()}
    too_much = {f"{saved[i]['type']} #{i}": (g, kept[i]) for i, g in grown.items() if g > kept[i]}
    assert not too_much, f"{frontend}: grew past the room kept below them (grown, kept): {too_much}"
    return result


FULL_WIDTH_RUNS = ("01_basic", "05_fast_schnell")
"""Where the other servers' FLUX.1 is narrow (tests/conftest.py: ``server_models``), these run on ``bases_server``,
3072 wide: with the GGUF, Fill and Kontext workflows, one full-width run per base kind, and the outputs the summary
compares with the other hosts'."""


def run_server(path: Path) -> str:
    """The fixture name of the server that runs a workflow for the first frontend."""
    if path.stem in SHOWN_AFTER_A_RUN:
        return "browser_server"
    if uses_other_bases(path) or (path.stem in FULL_WIDTH_RUNS and host_reads_flux_width()):
        return "bases_server"
    return "comfy_server"


def prompt_server(path: Path) -> str:
    """The fixture name of the server whose models and photos a workflow's prompt is checked against (and run on,
    unless the browser's own server runs it): the browser server's workflows are checked against ``comfy_server``."""
    return "comfy_server" if run_server(path) == "browser_server" else run_server(path)


RUN_ORDER = sorted(ALL_WORKFLOWS, key=lambda p: ("comfy_server", "browser_server", "bases_server").index(run_server(p)))
"""The workflows grouped by the server that runs them (in their own order within a group)."""
LAST_RUN_ON: list = []


def switch_to(server) -> None:
    """With ``INFU_FREE_MODELS_BETWEEN_MODULES`` (tests/conftest.py: hosts side by side, or a machine with less memory
    free), the server that ran the previous workflow lets go of its models once the next one runs on another: with
    the workflows grouped by server (``RUN_ORDER``), one of the three holds its FLUX at a time instead of all three
    (about 4 GB each where it is 3072 wide)."""
    if LAST_RUN_ON and LAST_RUN_ON[0] is not server and LAST_RUN_ON[0].alive() \
            and os.environ.get("INFU_FREE_MODELS_BETWEEN_MODULES"):
        LAST_RUN_ON[0].free_models()
    LAST_RUN_ON[:] = [server]


@pytest.mark.parametrize("path", RUN_ORDER, ids=lambda p: p.stem)
def test_workflow_in_the_frontend(page, frontend, browser_server, photos_on_run_servers,
                                 test_photo_names, tmp_path_factory, path):
    started = time.monotonic()
    workflow = json.loads(path.read_text())
    measured = page.evaluate(LOAD_AND_MEASURE, [workflow, {n["id"]: shown_below(n, workflow) for n in workflow["nodes"]}])
    page.screenshot(path=str(artifacts_dir() / f"{frontend}-layout-{path.stem}.png"))
    boxes, groups = measured["boxes"], measured["groups"]
    view = measured["view"]  # it opens readable, its first group in view
    assert view["low_quality"] is False and view["scale"] >= 0.75, f"{frontend}: {path.name} opens at {view}"
    assert view["group"] == "Models" and [c["on"] for c in view["corners"]] == ["canvas"] * 3, \
        f"{frontend}: {path.name} opens with its first group not in view: {view}"
    assert len(boxes) == len(workflow["nodes"]) and len(groups) >= 5
    assert measured["unknown"] == [], f"{frontend} does not know {measured['unknown']}"
    assert not missing_node_dialog(page), page.evaluate("() => document.body.innerText")[:2000]
    assert {g["title"] for g in groups} >= {"Models", "Identity", "Prompt", "Sampling", "Output"}
    for b in boxes:  # what a panel shown on load (missing files) already takes comes out of the room below
        b["room"] = [b["box"][0], b["box"][1], b["box"][2], b["box"][3] + max(0, b["below"] - b["panel"])]
    overlapping = clashes(boxes, "room")
    assert not overlapping, f"{frontend}: nodes overlap in {path.name}:\n" + "\n".join(overlapping)
    outside = [f"{b['type']} #{b['id']} {[round(v) for v in b['room']]}" for b in boxes
               if not any(inside(b["room"], g["box"]) for g in groups)]
    assert not outside, f"{frontend}: nodes outside every group in {path.name}: {outside}"
    group_clashes = [f"{a['title']} / {b['title']}" for i, a in enumerate(groups) for b in groups[i + 1:]
                     if overlap(a["box"], b["box"]) > 0]
    assert not group_clashes, group_clashes

    prompt = page.evaluate(f"async () => (await {APP}.graphToPrompt()).output")
    PROMPTS[(frontend, path.stem)] = prompt
    server = photos_on_run_servers[prompt_server(path)]
    info = server.object_info()
    undeclared = {(v["class_type"], name) for v in prompt.values() for name in v["inputs"]} - {
        (v["class_type"], name) for v in comparable(prompt, info).values() for name in v["inputs"]}
    assert undeclared <= {("PreviewAny", "preview")}, undeclared
    assert comparable(to_api(workflow, info), info) == comparable(prompt, info), \
        f"the pack's converter and {frontend}'s graphToPrompt disagree on {path.name}"

    first = frontend_list()[0]
    runnable = for_test_host(prompt)
    assert any(v["class_type"] in ("InfU_ApplyInfiniteYou", "InfU_ApplyLikenessBlend") for v in runnable.values())
    result = None
    if path.stem in SHOWN_AFTER_A_RUN:
        server = browser_server
    if frontend == first:
        switch_to(server)
    if server is browser_server:
        result = run_for_the_page(page, frontend, server, test_photo_names, workflow, runnable, boxes, path.stem,
                                  tmp_path_factory)
    if frontend == first and refusal_here(path):  # e.g. FLUX.2 [klein] on a ComfyUI that cannot load it
        expect_failure(server, runnable, *refusal_here(path))
    elif frontend == first:
        pixels = saved_pixels(server, result or run_ok(server, runnable))
        assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.std() > 0
        flux2 = any(n["type"] == "EmptyFlux2LatentImage" for n in workflow["nodes"])
        keep_for_host_comparison(path.stem, pixels, None if flux2 else server)
    else:
        assert (first, path.stem) in PROMPTS, f"{first} did not give a prompt for {path.name}"
        assert comparable(prompt, info) == comparable(PROMPTS[(first, path.stem)], info), \
            f"{frontend} and {first} give different prompts for {path.name}"
    SECONDS[frontend] = SECONDS.get(frontend, 0.0) + time.monotonic() - started


def test_print_how_long_the_workflows_took(frontend):
    """Runs after the module's workflows on this frontend: the time they took, for CI's budget."""
    assert frontend in SECONDS, f"no workflow test ran on {frontend}"
    print(f"\nworkflows on {frontend}: {SECONDS[frontend]:.1f} s for {len(ALL_WORKFLOWS)} workflows")
