"""Shared fixtures. Importing this module makes the test ComfyUI importable in-process (CPU)."""
from __future__ import annotations

import os
import socket

import pytest

import tests  # noqa: F401  (this package, bound before ComfyUI's own tests/ folder joins sys.path)
from devtools.comfy_env import enable_in_process_comfy

enable_in_process_comfy()


def pytest_configure(config):
    from tests.host_features import HOST_INDEPENDENT

    config.addinivalue_line("markers", f"{HOST_INDEPENDENT}(why): the same on every ComfyUI; when scripts/test.sh "
                                       "runs several hosts, only the newest runs it (tests/host_features.py)")


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    from tests.host_features import select_for_this_host

    select_for_this_host(config, items)


def pytest_collection_finish(session):
    """Note the last test that uses ``bare_server``: it stops after that test, not at the end of the run."""
    users = [item.nodeid for item in session.items if "bare_server" in getattr(item, "fixturenames", ())]
    LAST_BARE_SERVER_USER[:] = users[-1:]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """After a failed test, every running ComfyUI stops what it runs and drops what waits, so that a prompt a
    test left behind (one a page queued, one it never waited for) cannot slow down or fail the next test."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        from devtools.server import running_servers

        for server in running_servers():
            try:
                said = server.cancel_all()
            except Exception as stuck:
                said = f"could not empty the queue: {stuck}"
            report.sections.append((f"ComfyUI queue on port {server.port} after the failure", said))


def pytest_runtest_teardown(item, nextitem):
    """With ``INFU_FREE_MODELS_BETWEEN_MODULES=1`` (scripts/test.sh sets it when hosts run side by side, and whenever less
    memory is free than two hosts side by side need), every running ComfyUI lets go of its models once a test
    module is done: a server idle between modules then holds about 1.5 GB instead of about 4.4 GB (a 3072-wide FLUX
    in float32), and the next module that uses it loads them again.
    After the last test that uses ``bare_server``, that server stops (about 0.6 GB)."""
    if BARE_SERVER and item.nodeid in LAST_BARE_SERVER_USER:
        BARE_SERVER.pop().stop()
    if not os.environ.get("INFU_FREE_MODELS_BETWEEN_MODULES") or nextitem is None or nextitem.path == item.path:
        return
    from devtools.server import running_servers

    for server in running_servers():
        server.free_models()


@pytest.fixture
def seeded():
    """A fixed torch seed for tests that build random models."""
    import torch

    torch.manual_seed(0)
    return 0


def missing_pack_nodes(object_info: dict) -> list[str]:
    from tests.expected_nodes import PACK_NODE_IDS

    return [node for node in PACK_NODE_IDS if node not in object_info]


def start_server(base_dir, pack_dir=None, models=None, extra_args=(), port=None):
    """Start a ComfyUI with this pack linked in (on ``port`` first, when given); fail loudly if any of the pack's
    nodes is missing."""
    from devtools.comfy_env import PACK_ROOT
    from tests.fixtures.model_set import link_models
    from devtools.server import ComfyServer

    server = ComfyServer(base_dir, extra_args=list(extra_args))
    if port is not None:
        server.port = port
    server.prepare_base(pack_dir=pack_dir or PACK_ROOT)
    if models is not None:
        link_models(base_dir, models)
    server.start()
    missing = missing_pack_nodes(server.object_info())
    if missing:
        log = server.log()
        server.stop()
        raise AssertionError(f"The pack's nodes {missing} are not in /object_info: the pack failed to import.\n"
                             f"Server log:\n{log[-8000:]}")
    return server


@pytest.fixture(scope="session")
def model_dir():
    """The generated small-model set (cached between runs)."""
    from tests.fixtures.model_set import model_set

    return model_set()


@pytest.fixture(scope="session")
def server_models(model_dir):
    """The models of the servers whose prompts do not depend on FLUX.1's width (``comfy_server``, the browser's):
    FLUX.1 512 wide where the host reads the width from the weights, else the full set
    (tests/fixtures/model_set.py: ``server_model_set``)."""
    from tests.fixtures.model_set import server_model_set

    return server_model_set()


USERS_PHOTO = "infiniteyou_example_grace_hopper.jpg"
USERS_OWN = b"the user's own photo, not ours"
"""A file of the user's own under the name of one of the pack's example photos (tests/test_example_photos.py)."""
BARE_SERVER: list = []
LAST_BARE_SERVER_USER: list[str] = []


@pytest.fixture(scope="session")
def bare_server(tmp_path_factory):
    """A ComfyUI with this pack and no model files (a prompt is refused at validation, before anything loads; the
    loader checks find nothing), started as a user's or a busy machine's can be: with a photo of the user's own in
    input/ under an example photo's name (:data:`USERS_PHOTO`: the pack copies its example photos at start and must
    leave that one), and on a port another process took before ComfyUI listened (the harness moves to a free one:
    ``ports_taken``). Shared by the tests that need no models; it stops after the last of them."""
    base = tmp_path_factory.mktemp("bare-base")
    (base / "input").mkdir()
    (base / "input" / USERS_PHOTO).write_bytes(USERS_OWN)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = start_server(base, port=taken.getsockname()[1])
    BARE_SERVER[:] = [server]
    yield server
    server.stop()


COMBO_SOURCE = '''
class ComboSource:
    """A test node whose output is a COMBO value, as some packs' switch/selector nodes produce."""
    RETURN_TYPES = ("COMBO",)
    FUNCTION = "run"
    CATEGORY = "testing"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"value": ("STRING", {"default": ""})}}

    def run(self, value):
        return (value,)


NODE_CLASS_MAPPINGS = {"InfUTest_ComboSource": ComboSource}
'''
"""A custom node of the test server's own (``InfUTest_ComboSource``): a loader's choice linked from another node
(tests/test_hostile_inputs.py)."""


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory, server_models):
    """A real ComfyUI server with this pack and the small models (:func:`server_models`), shared by the session, and
    one test node of another pack's kind (:data:`COMBO_SOURCE`)."""
    base = tmp_path_factory.mktemp("comfy-base")
    (base / "custom_nodes" / "infu_test_combo_source").mkdir(parents=True)
    (base / "custom_nodes" / "infu_test_combo_source" / "__init__.py").write_text(COMBO_SOURCE)
    server = start_server(base, models=server_models)
    assert "InfUTest_ComboSource" in server.object_info(), server.log()[-4000:]
    yield server
    server.stop()


@pytest.fixture(scope="session")
def bases_server(tmp_path_factory, model_dir):
    """A ComfyUI with this pack, city96's ComfyUI-GGUF and the other FLUX.1 bases people use (GGUF, Fill,
    Kontext; devtools/bases.py) beside the small-model set, 3072 wide on every host: it runs the one full-width
    prompt of each base kind (tests/browser/test_workflows_in_frontend.py: ``FULL_WIDTH_RUNS``)."""
    from devtools import bases, comfyui_gguf

    base_dir = tmp_path_factory.mktemp("comfy-bases")
    comfyui_gguf.install_comfyui_gguf(base_dir / "custom_nodes")
    bases.link_into(base_dir, model_dir, bases.bases_dir(model_dir))
    server = start_server(base_dir, models=model_dir)
    missing = [n for n in comfyui_gguf.GGUF_NODES if n not in server.object_info()]
    if missing:
        log = server.log()
        server.stop()
        raise AssertionError(f"ComfyUI-GGUF's nodes {missing} are missing: it failed to import (is `gguf` "
                             f"installed? tests/requirements.txt).\nServer log:\n{log[-8000:]}")
    yield server
    server.stop()
