"""The pack's HTTP routes (glue only): ``GET /infiniteyou/models`` serves :mod:`infusenet.doctor`; the answer to
``POST /prompt`` carries each of this pack's validation messages once per node; ``GET /infiniteyou/loader-check``
says what a loader node's choices would be refused for, before a run."""
from __future__ import annotations

import asyncio
import inspect
import math
import re

from aiohttp import web

from ..infusenet import catalogue, doctor, host

PREFIX = "/infiniteyou/models"
_ENCODED = re.compile(r"%(2e|2f|5c|00|25)", re.IGNORECASE)
NODE_PREFIX = "InfU_"
VALIDATION_FAILED = "custom_validation_failed"


def _refuse(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def models_report(request: web.Request) -> web.Response:
    """The whole inventory, or one file with ``?file=<path under models/>`` (or ``/infiniteyou/models/<path>``).
    Any parameter that could leave the model folders is answered with 400."""
    if _ENCODED.search(request.raw_path) or ".." in request.raw_path:
        return _refuse("encoded separators, dots or '..' are not allowed in the request")
    values = [*request.query.values(), *request.match_info.values()]
    try:
        for value in values:
            if value:
                doctor.safe_relative(value)
        name = request.match_info.get("file") or request.query.get("file")
        if name:
            return web.json_response(await asyncio.to_thread(doctor.check_one, name))
    except doctor.UnsafePath as exc:
        return _refuse(str(exc))
    return web.json_response(await asyncio.to_thread(doctor.inventory))


def one_message_per_node(answer: dict) -> dict:
    """``answer`` (to ``POST /prompt``) with each validation message of this pack's nodes once.

    ComfyUI files what a node's ``validate_inputs`` returns once for every input that method takes (details
    ``"<input> - <message>"``), so Apply InfiniteYou's message would be listed seven times by the frontend. One
    stays, on the input the message names first (``start`` for "start (0.9) is after end (0.2)")."""
    for entry in (answer.get("node_errors") or {}).values():
        if str(entry.get("class_type", "")).startswith(NODE_PREFIX):
            entry["errors"] = once_each(entry.get("errors") or [])
    return answer


def once_each(errors: list[dict]) -> list[dict]:
    """Validation errors of one node that carry the same message become one; other errors stay, in order."""
    kept: list[dict] = []
    where: dict[str, int] = {}  # message -> its place in kept
    for error in errors:
        if error.get("type") != VALIDATION_FAILED:
            kept.append(error)
            continue
        message = validation_message(error)
        if message not in where:
            where[message] = len(kept)
            kept.append(error)
        elif named_at(error, message) < named_at(kept[where[message]], message):
            kept[where[message]] = error
    return kept


def input_of(error: dict) -> str:
    return str((error.get("extra_info") or {}).get("input_name", ""))


def validation_message(error: dict) -> str:
    """The node's message without the ``"<input> - "`` ComfyUI puts in front."""
    details, name = str(error.get("details", "")), input_of(error)
    return details[len(name) + 3:] if details.startswith(f"{name} - ") else details


def named_at(error: dict, message: str) -> float:
    """Where the message first names the error's input as a word (infinity when it does not)."""
    found = re.search(rf"(?<!\w){re.escape(input_of(error))}(?!\w)", message) if input_of(error) else None
    return found.start() if found else math.inf


LOADER_CHECK = "/infiniteyou/loader-check"
MAX_VALUE = 1024


def loader_classes() -> dict:
    """The nodes whose files a workflow needs before it can run, by node type."""
    from .face import FaceEncoderLoader
    from .infusenet import InfuseNetLoader

    return {"InfU_InfuseNetLoader": InfuseNetLoader, "InfU_FaceEncoderLoader": FaceEncoderLoader}


async def loader_check(request: web.Request) -> web.Response:
    """``?node=<type>&<input>=<value>...``: what the run would refuse a loader with these choices for, said by the
    node's own ``validate_inputs``, so that the page can mark a workflow's missing files when it opens, before
    anyone presses Run. Answers ``{"ok": true}`` or ``{"ok": false, "message": ...}``."""
    query = dict(request.query)
    classes = loader_classes()
    cls = classes.get(query.pop("node", ""))
    if cls is None:
        return _refuse(f"node must be one of {sorted(classes)}")
    names = [n for n in inspect.signature(cls.validate_inputs).parameters if n != "input_types"]
    if len(query) > 4 * len(names) or any(len(v) > MAX_VALUE for v in query.values()):
        return _refuse(f"at most {4 * len(names)} values of at most {MAX_VALUE} characters (model file names)")
    verdict = await asyncio.to_thread(cls.validate_inputs, **{n: query.get(n) for n in names})
    return web.json_response({"ok": True} if verdict is True else {"ok": False, "message": str(verdict)})


TEMPLATES = "/infiniteyou/templates"


async def template_lines(request: web.Request) -> web.Response:
    """``{workflow name: one line}``: what the page writes under each of the pack's template cards."""
    return web.json_response(catalogue.TEMPLATE_LINES)


def register_routes() -> bool:
    ok = host.add_get_route(LOADER_CHECK, loader_check)
    ok = host.add_get_route(TEMPLATES, template_lines) and ok
    ok = host.add_get_route(PREFIX, models_report) and ok
    ok = host.add_get_route(PREFIX + "/{file:.+}", models_report) and ok
    return host.rewrite_prompt_answers(one_message_per_node) and ok
