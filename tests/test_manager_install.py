"""ComfyUI-Manager installs this pack from a git URL with no network, and ComfyUI then loads it.

The real ``comfyui-manager`` package from PyPI ships the ``cm_cli`` command line. This test runs its
install-from-git-URL command the way a user would::

    COMFYUI_PATH=<ComfyUI> python -m cm_cli install --exit-on-fail <git url of this pack>

against a throw-away copy of the test ComfyUI, with a git URL that points at a bare clone of this
repository's committed HEAD. Then a real ComfyUI server is started on that copy and the pack's nodes
must be listed in ``/object_info``.

Offline proof: every HTTP(S) client involved (pip, aiohttp/requests inside the Manager, git) is
pointed at a loopback proxy that records each request and refuses it, and git may only use the
``file`` protocol. The Manager's output is read line by line with timestamps, so a refused request
is tied to the exact install step that made it (``git clone``, one ``pip install <requirement>``,
``install.py``, or the Manager's own registry/channel fetches). A control run shows that pip and the
Manager's HTTP helper really do go through that proxy, so "no request recorded" means "no network
needed", not "traffic went around the recorder".
"""
from __future__ import annotations

import os
import re
import shutil
import socketserver
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import InvalidRequirement, Requirement

from devtools.comfy_env import PACK_ROOT, comfyui_dir
from devtools.server import ComfyServer

# The folder name the Manager derives from the URL (the last path part, less ".git"): the same one a
# user gets from the GitHub URL in pyproject.toml.
REPO_NAME = "ComfyUI-InfiniteYou-Studio"
CM_TIMEOUT_S = 240
EXECUTE_MARK = "## ComfyUI-Manager: EXECUTE =>"
TOP_LEVEL_SKIP = {"custom_nodes", "models", "user", "input", "output", "temp", ".git", "venv", ".venv"}


# -- a loopback proxy that records and refuses every request ----------------------------------------
@dataclass
class Attempt:
    at: float          # time.monotonic() when the request arrived
    request_line: str  # e.g. "CONNECT pypi.org:443 HTTP/1.1" or "GET http://host/path HTTP/1.1"

    @property
    def target(self) -> str:
        parts = self.request_line.split()
        return parts[1] if len(parts) > 1 else self.request_line


class NetworkRecorder:
    """An HTTP proxy on 127.0.0.1 that answers every request (CONNECT included) with 403."""

    def __init__(self):
        self.attempts: list[Attempt] = []
        recorder = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                self.connection.settimeout(5)
                line = ""
                try:
                    line = self.rfile.readline(8192).decode("latin-1").strip()
                    while self.rfile.readline(8192).strip():  # drain the headers
                        pass
                except OSError:
                    pass
                if line:
                    recorder.attempts.append(Attempt(time.monotonic(), line))
                try:
                    self.wfile.write(b"HTTP/1.1 403 Forbidden (offline test)\r\nContent-Length: 0\r\n"
                                     b"Connection: close\r\n\r\n")
                except OSError:
                    pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "NetworkRecorder":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def offline_env(recorder: NetworkRecorder, comfy_path: Path) -> dict:
    """The environment for cm_cli: every network route goes to the recorder, and fails fast there."""
    env = {k: v for k, v in os.environ.items()
           if not k.upper().startswith(("PIP_", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"))}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        env[name] = env[name.lower()] = recorder.url
    env.update(
        COMFYUI_PATH=str(comfy_path),
        # pip: only the public index (so an index lookup is a visible request), no retries, no local
        # pip.conf (machine-specific mirrors would hide what a user's machine would do)
        PIP_CONFIG_FILE=os.devnull, PIP_INDEX_URL="https://pypi.org/simple", PIP_RETRIES="0",
        PIP_DEFAULT_TIMEOUT="10", PIP_DISABLE_PIP_VERSION_CHECK="1",
        # git: local file URLs only; anything else fails immediately, and never prompts
        GIT_ALLOW_PROTOCOL="file", GIT_TERMINAL_PROMPT="0",
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        PYTHONUNBUFFERED="1", NO_COLOR="1", TERM="dumb", COLUMNS="400",
    )
    return env


def run_timed(cmd: list[str], env: dict, cwd: Path, timeout: float) -> tuple[int, list[tuple[float, str]]]:
    """Run a command; return its exit code and its output lines, each with the time it appeared."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    lines: list[tuple[float, str]] = []

    def pump():
        for raw in proc.stdout:
            for piece in raw.decode("utf-8", "replace").replace("\r", "\n").splitlines():
                if piece.strip():
                    lines.append((time.monotonic(), piece.rstrip()))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        reader.join(5)
        raise AssertionError(f"{' '.join(cmd)} did not finish in {timeout:.0f} s (waiting on the network?). "
                             "Output:\n" + "\n".join(line for _, line in lines[-60:]))
    reader.join(10)
    return rc, lines


def step_of(lines: list[tuple[float, str]], at: float) -> str:
    """The install step running at time ``at``: the last step header the Manager printed before it."""
    current = "cm_cli start-up (registry / channel data)"
    for t, line in lines:
        if t > at:
            break
        if line.startswith(EXECUTE_MARK):
            current = line[len(EXECUTE_MARK):].strip()
        elif line.startswith(("CLONE into", "Install: ")):
            current = line
    return current


def unsatisfied_requirements(requirements_txt: Path) -> list[str]:
    """Requirement lines (for this platform) that the current Python does not already satisfy."""
    missing = []
    for raw in requirements_txt.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement:
            missing.append(line)
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            missing.append(line)
            continue
        if not req.specifier.contains(version, prereleases=True):
            missing.append(f"{line} (installed: {version})")
    return missing


PROBES = (
    # pip looking up a requirement it does not have: needs the index (pypi.org)
    ["-m", "pip", "download", "--no-deps", "--dest", "probe-dl", "infiniteyou-offline-probe-nonexistent==0.0.1"],
    # the Manager's HTTP helper, as used for the ComfyRegistry and channel fetches
    ["-c", "import asyncio, os, sys\n"
           "sys.path.insert(0, os.environ['COMFYUI_PATH'])\n"
           "from comfyui_manager.common import manager_util as m\n"
           "try:\n    asyncio.run(m.get_data('https://api.comfy.org/nodes', silent=True))\n"
           "except Exception as e:\n    print(type(e).__name__, e)"],
)


def run_probe(args: list[str], env: dict, cwd: Path) -> str:
    proc = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)
    return (proc.stdout + proc.stderr)[-1500:]


# -- the install, shared by the tests below ----------------------------------------------------------
@dataclass
class ManagerInstall:
    comfy: Path
    url: str
    head: str
    rc: int
    lines: list[tuple[float, str]]
    attempts: list[Attempt]
    seconds: float
    control: list[Attempt] = field(default_factory=list)
    control_output: str = ""

    @property
    def pack_dir(self) -> Path:
        return self.comfy / "custom_nodes" / REPO_NAME

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def network_report(self) -> str:
        return "\n".join(f"  step [{step_of(self.lines, a.at)}] -> {a.request_line}" for a in self.attempts)


def _git(*args: str, cwd: Path | None = None) -> str:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True,
                          text=True, timeout=60).stdout.strip()


@pytest.fixture(scope="module")
def manager_install(tmp_path_factory) -> ManagerInstall:
    if shutil.which("git") is None:
        pytest.fail("git is required: ComfyUI-Manager installs from git URLs with GitPython")
    work = tmp_path_factory.mktemp("manager-install")

    # A ComfyUI of our own (the Manager writes into custom_nodes/ and user/__manager/): the code of
    # the test ComfyUI, without its data folders, installed packs, git history or virtualenv.
    comfy = work / "ComfyUI"
    host = comfyui_dir()

    def skip(folder: str, names: list[str]) -> list[str]:
        top = TOP_LEVEL_SKIP if Path(folder) == host else set()
        return [n for n in names if n in top or n == "__pycache__" or n.endswith(".pyc")]

    shutil.copytree(host, comfy, symlinks=True, ignore=skip)
    for sub in ("custom_nodes", "user", "models", "input", "output", "temp"):
        (comfy / sub).mkdir(exist_ok=True)

    # The pack as a git remote: a bare clone of the committed HEAD, under the repository's real name.
    remote = work / "remote" / f"{REPO_NAME}.git"
    remote.parent.mkdir()
    _git("clone", "--quiet", "--bare", "--no-hardlinks", str(PACK_ROOT), str(remote))
    head = _git("rev-parse", "HEAD", cwd=remote)
    # cm_cli only takes URLs with a host part (urlparse netloc): file:///path is refused as "Invalid
    # git url", file://localhost/path is accepted and git treats it as a local path.
    url = f"file://localhost{remote.as_posix()}"

    with NetworkRecorder() as recorder:
        env = offline_env(recorder, comfy)
        start = time.monotonic()
        # NB: in comfyui-manager 4.3 a failed URL install still exits 0 (--exit-on-fail is not passed
        # on to URL installs), so the test also reads the output for the Manager's error lines.
        rc, lines = run_timed([sys.executable, "-m", "cm_cli", "install", "--exit-on-fail", url],
                              env=env, cwd=work, timeout=CM_TIMEOUT_S)
        seconds = time.monotonic() - start
        attempts = list(recorder.attempts)

        # Control: the same environment does send pip's index lookups and the Manager's own HTTP
        # helper (aiohttp) to the recorder, so an empty record above means nothing went out.
        before = len(recorder.attempts)
        control_output = "\n".join(run_probe(code, env, work) for code in PROBES)
        control = recorder.attempts[before:]

    return ManagerInstall(comfy, url, head, rc, lines, attempts, seconds, control, control_output)


# -- tests ------------------------------------------------------------------------------------------
def test_requirements_are_already_satisfied():
    """The precondition for an offline install: the Manager runs ``pip install <line>`` for every line
    of requirements.txt, and pip only needs the index for a requirement that is not yet satisfied."""
    missing = unsatisfied_requirements(PACK_ROOT / "requirements.txt")
    assert not missing, (f"not installed in {sys.prefix}: {missing}. ComfyUI-Manager's pip step would "
                         "have to download them from PyPI (run scripts/setup.sh first).")


def test_recorder_sees_pip_and_manager_http(manager_install: ManagerInstall):
    """Validity of the offline proof: with the environment cm_cli ran in, a pip index lookup and a
    request through the Manager's own HTTP helper both land on the recording proxy."""
    targets = [a.target for a in manager_install.control]
    detail = f"recorded: {targets}\nprobe output:\n{manager_install.control_output}"
    assert any(t.startswith("pypi.org") for t in targets), f"pip bypassed the recording proxy; {detail}"
    assert any(t.startswith("api.comfy.org") for t in targets), \
        f"the Manager's HTTP helper bypassed the recording proxy; {detail}"


def test_cm_cli_installs_pack_from_git_offline(manager_install: ManagerInstall):
    inst = manager_install
    out = inst.output
    assert inst.rc == 0, f"cm_cli install exited with {inst.rc}\n{out[-6000:]}\nnetwork attempts:\n{inst.network_report()}"
    assert not inst.attempts, ("ComfyUI-Manager tried to reach the network during an install from a local "
                               f"git URL:\n{inst.network_report()}\n\ncm_cli output:\n{out[-6000:]}")
    assert f"[INSTALLED] {inst.url}" in out, out[-4000:]
    for failure in ("install script failed", "Install(git-clone) error", "An error occurred while installing"):
        assert failure not in out, f"{failure!r} in cm_cli output:\n{out[-6000:]}"

    # The Manager cloned the committed HEAD into custom_nodes/<repo name>, remote set to our URL.
    pack = inst.pack_dir
    assert (pack / ".git").is_dir(), f"no git clone at {pack}; custom_nodes has {os.listdir(pack.parent)}"
    assert _git("rev-parse", "HEAD", cwd=pack) == inst.head
    assert _git("remote", "get-url", "origin", cwd=pack) == inst.url
    tracked = set(_git("ls-tree", "-r", "--name-only", inst.head, cwd=PACK_ROOT).splitlines())
    present = {p.relative_to(pack).as_posix() for p in pack.rglob("*") if p.is_file() and ".git" not in p.parts}
    assert tracked <= present, f"files missing from the install: {sorted(tracked - present)}"
    assert {"__init__.py", "requirements.txt", "install.py"} <= tracked

    # It ran `pip install <line>` for each requirement line, then install.py, in the pack folder.
    executed = [line[len(EXECUTE_MARK):].strip() for _, line in inst.lines if line.startswith(EXECUTE_MARK)]
    requirement_lines = [ln.split("#", 1)[0].strip() for ln in (pack / "requirements.txt").read_text().splitlines()]
    for req in filter(None, requirement_lines):
        assert any("'pip', 'install'" in cmd and req.replace('"', "") in cmd.replace('"', "").replace("\\", "")
                   for cmd in executed), f"no pip step for {req!r}; steps run: {executed}"
    assert any(cmd.endswith("'install.py']") for cmd in executed), f"install.py was not run; steps: {executed}"
    assert "ONNX Runtime providers available" in out, "install.py did not print its provider report"


def test_server_loads_the_manager_installed_pack(manager_install: ManagerInstall):
    from tests.conftest import missing_pack_nodes

    inst = manager_install
    if not (inst.pack_dir / "__init__.py").is_file():
        pytest.fail(f"the Manager did not install the pack at {inst.pack_dir}")
    # The Manager put a real copy in custom_nodes/, so nothing is linked in.
    server = ComfyServer(base_dir=inst.comfy, comfy_dir=inst.comfy)
    server.prepare_base(link_pack=False)
    server.start()
    try:
        info = server.object_info()
        log = server.log()
    finally:
        server.stop()
    missing = missing_pack_nodes(info)
    committed = _git("ls-tree", "--name-only", "HEAD", cwd=inst.pack_dir).split()
    hint = "" if "nodes" in committed else " (nodes/ is not in that commit: the Manager installs what is committed)"
    assert not missing, (
        f"ComfyUI started with the pack that ComfyUI-Manager installed (commit {inst.head[:12]}, top level "
        f"{committed}){hint}, but its nodes {missing} are not in /object_info. Server log:\n{log[-6000:]}")
    assert re.search(rf"custom_nodes[/\\]{re.escape(REPO_NAME)}", log), "the server did not load the installed folder"
