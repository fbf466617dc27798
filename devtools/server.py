"""A real ComfyUI server in a subprocess, and a small HTTP client for it.

The server gets its own ``--base-directory`` (models/, custom_nodes/, input/, output/...) and a free
loopback port; this pack is linked into its ``custom_nodes/``.

A prompt that times out is interrupted and the queue cleared before the wait gives up, so that nothing a test
left behind delays the next one (:meth:`ComfyServer.cancel_all`; tests/conftest.py does the same for every
running server after a failed test).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import weakref
from dataclasses import dataclass, field
from pathlib import Path

from devtools.comfy_env import PACK_ROOT, comfyui_dir

log = logging.getLogger(__name__)

PACK_LINK_NAME = "infiniteyou-studio"
CANCEL_TIMEOUT_S = 300.0
"""How long an interrupt may take to land: ComfyUI checks for it between nodes and at each sampler step, and
one step of a large model on a loaded 2-core machine can take tens of seconds."""

_STARTED: weakref.WeakValueDictionary[int, "ComfyServer"] = weakref.WeakValueDictionary()


def running_servers() -> list["ComfyServer"]:
    """Every server started by :meth:`ComfyServer.start` in this process that is still running."""
    return [server for server in list(_STARTED.values()) if server.alive()]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PortTaken(Exception):
    """ComfyUI could not listen on its port: another process took it after it was picked."""


class PromptRejected(Exception):
    """POST /prompt answered 400: the prompt failed validation."""

    def __init__(self, body: dict):
        self.body = body
        super().__init__(json.dumps(body, indent=1)[:4000])

    @property
    def node_errors(self) -> dict:
        return self.body.get("node_errors", {})

    def messages(self) -> list[str]:
        """Every human-readable message in the rejection, flattened."""
        out = [self.body.get("error", {}).get("message", ""), self.body.get("error", {}).get("details", "")]
        for node in self.node_errors.values():
            for err in node.get("errors", []):
                out += [err.get("message", ""), err.get("details", "")]
        return [m for m in out if m]


@dataclass
class PromptResult:
    prompt_id: str
    history: dict

    @property
    def status(self) -> str:
        return self.history.get("status", {}).get("status_str", "")

    @property
    def error(self) -> dict | None:
        """The ``execution_error`` message data, if the prompt failed while running."""
        for kind, data in self.history.get("status", {}).get("messages", []):
            if kind == "execution_error":
                return data
        return None

    def images(self, node_id: str | None = None) -> list[dict]:
        found = []
        for nid, out in self.history.get("outputs", {}).items():
            if node_id is None or nid == node_id:
                found += out.get("images", [])
        return found

    def output(self, node_id: str) -> dict:
        return self.history.get("outputs", {}).get(node_id, {})


@dataclass
class ComfyServer:
    base_dir: Path
    port: int = field(default_factory=free_port)
    extra_args: list[str] = field(default_factory=list)
    comfy_dir: Path = field(default_factory=comfyui_dir)
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    ports_taken: list[int] = field(default_factory=list)
    """The ports another process held when this ComfyUI tried to listen on them (:meth:`start` moved on)."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- lifecycle -----------------------------------------------------------------------------
    def prepare_base(self, link_pack: bool = True, pack_dir: Path = PACK_ROOT) -> None:
        for sub in ("custom_nodes", "models", "input", "output", "temp", "user"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        if link_pack:
            link = self.base_dir / "custom_nodes" / PACK_LINK_NAME
            if link.is_symlink() or link.exists():
                link.unlink() if link.is_symlink() else shutil.rmtree(link)
            link.symlink_to(pack_dir, target_is_directory=True)

    def start(self, timeout: float = 180.0) -> "ComfyServer":
        """Start ComfyUI and wait until it answers. Its port is picked free before the start; when another process
        took it meanwhile (test hosts run side by side), ComfyUI exits saying so, and it starts again on another."""
        self.log_path = self.base_dir / "server.log"
        self.log_path.write_text("")  # one log for every try
        for _ in range(3):
            try:
                return self._start(timeout)
            except PortTaken:
                self.ports_taken.append(self.port)
                self.port = free_port()
        return self._start(timeout)

    def _start(self, timeout: float) -> "ComfyServer":
        earlier = len(self.log())
        log = open(self.log_path, "a")
        cmd = [
            sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base_dir), "--disable-api-nodes", "--disable-auto-launch",
            "--preview-method", "none", *self.extra_args,
        ]
        env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        self.process = subprocess.Popen(
            cmd, cwd=self.comfy_dir, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                if "already in use" in self.log()[earlier:].lower():  # 0.3.75: asyncio's bind error; 0.30: its own
                    raise PortTaken(self.port)
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode} during start:\n{self.log()}")
            try:
                self.get_json("/system_stats", timeout=2)
                _STARTED[id(self)] = self
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(0.1)  # a refused connection costs nothing: the test goes on as soon as the server answers
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer within {timeout:.0f} s:\n{self.log()}")

    def stop(self) -> None:
        _STARTED.pop(id(self), None)
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    # -- HTTP ----------------------------------------------------------------------------------
    def request(self, path: str, data: dict | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
        body = json.dumps(data).encode() if data is not None else None
        req = urllib.request.Request(self.url + path, data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def get_json(self, path: str, timeout: float = 30.0):
        status, body = self.request(path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET {path} -> {status}: {body[:500]!r}")
        return json.loads(body)

    def object_info(self) -> dict:
        return self.get_json("/object_info", timeout=120)

    def submit(self, prompt: dict, client_id: str | None = None) -> str:
        """Queue an API-format prompt; returns its id or raises PromptRejected. ``client_id``: the browser
        page (its websocket) that gets the run's progress and what each node shows, as if it had queued it.

        ComfyUI queues a prompt when at least one output validates and drops the others; any node
        error counts as a rejection here, so a test never mistakes a partial run for success."""
        status, body = self.request("/prompt", {"prompt": prompt, "client_id": client_id or uuid.uuid4().hex})
        data = json.loads(body)
        if status != 200 or data.get("node_errors"):
            raise PromptRejected(data)
        return data["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0) -> PromptResult:
        """The finished prompt's history. A prompt that does not finish within ``timeout`` is interrupted and
        the queue cleared (:meth:`cancel_all`) before TimeoutError is raised; so is any other way the wait
        fails while the server runs."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                history = self.get_json(f"/history/{prompt_id}")
                entry = history.get(prompt_id)
                if entry and entry.get("status", {}).get("status_str") in ("success", "error"):
                    return PromptResult(prompt_id, entry)
                if not self.alive():
                    raise RuntimeError(f"ComfyUI died while running {prompt_id}:\n{self.log()[-6000:]}")
                time.sleep(0.2)
        except BaseException:
            if self.alive():
                try:
                    self.cancel_all()
                except Exception as stuck:  # the first error is the one to report; this one goes to the log
                    log.warning("after %s failed: %s", prompt_id, stuck)
            raise
        cleared = self.cancel_all()
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout:.0f} s; {cleared}")

    def free_models(self) -> None:
        """Let go of the loaded models and cached node outputs (``POST /free``), as ComfyUI's own "unload models"
        button does: on a CPU, unloading alone moves nothing, so the cache that holds them goes too. ComfyUI does it
        once no prompt runs; the next prompt loads what it needs again."""
        status, body = self.request("/free", {"unload_models": True, "free_memory": True})
        if status != 200:
            raise RuntimeError(f"POST /free -> {status}: {body[:500]!r}")

    def queue(self) -> tuple[list[str], list[str]]:
        """The ids of the prompts running and of those waiting (``GET /queue``)."""
        data = self.get_json("/queue")
        return [item[1] for item in data["queue_running"]], [item[1] for item in data["queue_pending"]]

    def cancel_all(self, timeout: float = CANCEL_TIMEOUT_S) -> str:
        """Drop every waiting prompt and interrupt the running one; return once the queue is empty, saying
        what was stopped. The queue is cleared before each interrupt, so that the interrupt cannot let a
        waiting prompt start. An interrupt sent while nothing runs is harmless: ComfyUI resets the flag when
        a prompt starts."""
        running, pending = self.queue()
        said = f"interrupted {running or 'nothing'}, dropped {len(pending)} waiting"
        deadline = time.monotonic() + timeout
        while running or pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ComfyUI still runs {running} and holds {len(pending)} waiting prompts "
                                   f"{timeout:.0f} s after an interrupt ({said}):\n{self.log()[-4000:]}")
            self.request("/queue", {"clear": True})
            self.request("/interrupt", {})
            time.sleep(0.5)
            running, pending = self.queue()
        return said

    def run(self, prompt: dict, timeout: float = 600.0) -> PromptResult:
        return self.wait(self.submit(prompt), timeout)

    def view(self, image: dict) -> bytes:
        query = f"filename={image['filename']}&subfolder={image.get('subfolder', '')}&type={image.get('type', 'output')}"
        status, body = self.request(f"/view?{query}")
        if status != 200:
            raise RuntimeError(f"/view {query} -> {status}")
        return body
