"""The pack's HTTP routes (glue only): ``GET /infiniteyou/models`` serves :mod:`infusenet.doctor`."""
from __future__ import annotations

import asyncio
import re

from aiohttp import web

from ..infusenet import doctor, host

PREFIX = "/infiniteyou/models"
_ENCODED = re.compile(r"%(2e|2f|5c|00|25)", re.IGNORECASE)


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


def register_routes() -> bool:
    ok = host.add_get_route(PREFIX, models_report)
    ok = host.add_get_route(PREFIX + "/{file:.+}", models_report) and ok
    return ok
