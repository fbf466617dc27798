"""A real ComfyUI with this pack, driven by headless Chromium (Debian's ``chromium`` package) through
Playwright. No browser is downloaded: ``INFU_CHROMIUM`` or ``chromium`` on PATH is used, else the
tests fail, naming the install. Frontends: see :mod:`tests.browser.frontends` (``INFU_FRONTENDS``). Screenshots go to
``INFU_ARTIFACTS`` (default ``.host/artifacts``)."""
from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path

import pytest

from tests.browser.frontends import frontend_list, server_args
from tests.browser.layout import settle
from devtools.comfy_env import PACK_ROOT
from tests.fixtures.model_set import flux_width
from tests.fixtures.shared_files import shared_file


def chromium_path() -> str | None:
    return os.environ.get("INFU_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def artifacts_dir() -> Path:
    path = Path(os.environ.get("INFU_ARTIFACTS", PACK_ROOT / ".host" / "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def build_browser_models(models: Path, cache: Path, tmp_path_factory=None) -> None:
    """The small-model set, file by file, except: the fp8 InfuseNet is cut short (corrupt) and the
    deliberately broken files are left out. T5 is missing (not generated). With ``tmp_path_factory``, every browser
    server of the run links the same cut-short file (tests/fixtures/shared_files.py)."""
    models.mkdir(parents=True, exist_ok=True)
    for sub in cache.iterdir():
        if sub.name != "infiniteyou":
            (models / sub.name).symlink_to(sub, target_is_directory=sub.is_dir())
    infu = models / "infiniteyou"
    infu.mkdir()
    for item in (cache / "infiniteyou").iterdir():
        if item.name not in ("aes_stage2", "broken"):
            (infu / item.name).symlink_to(os.readlink(item) if item.is_symlink() else item,
                                          target_is_directory=item.is_dir())
    aes = infu / "aes_stage2"
    aes.mkdir()
    for name in ("infusenet_aes_bf16.safetensors", "image_proj_model.bin"):
        (aes / name).symlink_to(cache / "infiniteyou" / "aes_stage2" / name)
    def cut_short(target: Path) -> None:
        data = (cache / "infiniteyou" / "aes_stage2" / "infusenet_aes_fp8e4m3fn.safetensors").read_bytes()
        target.write_bytes(data[: len(data) // 3])

    target = aes / "infusenet_aes_fp8e4m3fn.safetensors"
    if tmp_path_factory is None:
        cut_short(target)
    else:
        shared_file(tmp_path_factory, target, f"infusenet_aes_fp8e4m3fn-{flux_width(cache)}-cut-short.safetensors",
                    cut_short)


def write_photos(folder: Path) -> None:
    """The self-test's photo (the pack copies the example photos the other workflows load at start)."""
    import numpy as np
    from PIL import Image

    from devtools.face_models import draw_faces

    folder.mkdir(parents=True, exist_ok=True)
    pixels = draw_faces((256, 256), [(72, 56, 184, 200)], texture_seed=7) * 255
    Image.fromarray(pixels.astype(np.uint8)).save(folder / "infu_selftest_face.png")


def post_setting(server, key: str, value) -> None:
    req = urllib.request.Request(f"{server.url}/settings/{key}", data=json.dumps(value).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=30).read()


CLOSE_AFTER_THE_BROWSER_TESTS: list = []
"""How to close the browser server of the frontend under test and Chromium (session fixtures)."""


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item, nextitem):
    """A browser server holds a 3072-wide FLUX (about 4 GB) and Chromium its pages: once the next test is not a
    browser test, they close instead of staying until the session ends (their fixtures' own teardown then finds
    them closed). After the session's last test, the fixtures' own teardown has closed them already."""
    if nextitem is None:
        CLOSE_AFTER_THE_BROWSER_TESTS.clear()
        return
    if Path(__file__).parent in Path(nextitem.path).parents:
        return
    while CLOSE_AFTER_THE_BROWSER_TESTS:
        CLOSE_AFTER_THE_BROWSER_TESTS.pop()()


@pytest.fixture(scope="session", params=frontend_list())
def frontend(request) -> str:
    """One frontend at a time for the whole run: pytest runs every browser test of a frontend (all modules) before
    it starts the next one's server, so each frontend's server and Chromium start once."""
    return request.param


@pytest.fixture(scope="session")
def browser_server(frontend, tmp_path_factory, server_models):
    from devtools.comfyui_gguf import install_comfyui_gguf
    from tests.conftest import start_server

    if chromium_path() is None:
        pytest.fail("the browser tests need Chromium: apt-get install chromium (scripts/setup.sh does it as root), "
                    "or set INFU_CHROMIUM to a Chromium binary")
    base = tmp_path_factory.mktemp(f"browser-{frontend}")
    build_browser_models(base / "models", server_models, tmp_path_factory)
    write_photos(base / "input")
    install_comfyui_gguf(base / "custom_nodes")  # the GGUF workflow's loader, as its users have it
    server = start_server(base, extra_args=server_args(frontend.split("+")[0]))
    for key, value in (("Comfy.TutorialCompleted", True), ("Comfy.Workflow.ShowMissingModelsWarning", False),
                       ("Comfy.VueNodes.Enabled", frontend.endswith("+vue")), ("Comfy.Validation.Workflows", True)):
        post_setting(server, key, value)
    CLOSE_AFTER_THE_BROWSER_TESTS.append(server.stop)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        CLOSE_AFTER_THE_BROWSER_TESTS.append(b.close)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser, browser_server):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    pg = context.new_page()
    pg.console_messages = []
    pg.on("console", lambda m: pg.console_messages.append(f"{m.type}: {m.text}"))
    pg.on("pageerror", lambda e: pg.console_messages.append(f"pageerror: {e}"))
    pg.goto(browser_server.url, wait_until="domcontentloaded", timeout=120_000)
    pg.wait_for_function("() => window.InfiniteYou && (window.comfyAPI?.app?.app?.graph)", timeout=120_000)
    settle(pg)
    pg.keyboard.press("Escape")
    yield pg
    context.close()
