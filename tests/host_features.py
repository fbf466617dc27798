"""The ways a test may be left out on a host.

* ``needs_host``: a feature the ComfyUI under test does not have. The reason names the ComfyUI version and what
  it lacks, and scripts/test.sh prints it in the per-host summary.
* ``newest_host_only``: a test whose subject is the same on every ComfyUI. When scripts/test.sh runs several
  hosts it runs on the last one (the newest) only; on the others it is deselected, not skipped, and the summary
  lists per test module how many tests each host left to the newest one. Run alone (plain pytest,
  ``COMFYUI_DIR=...``, or ``INFU_HOSTS`` naming one host) it always runs.

Side by side, scripts/test.sh runs the newest host's tests in two pytest processes (``INFU_TEST_PART``), each on one
CPU thread: ``first`` from the start, beside the older host; ``second`` once an older host is done, beside the first,
so that both cores stay busy to the end. The second takes the host-independent tests and the in-process modules of
``SECOND_PART_MODULES`` (they start no ComfyUI server, so the second process starts none either).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from devtools.comfy_env import comfyui_version

HOST_INDEPENDENT = "host_independent"
"""The marker ``newest_host_only`` sets; its one argument says why the host does not matter."""
NEWEST_HOST_ENV = "INFU_NEWEST_HOST"
"""Set by scripts/test.sh to the name of the last host of the run, the one that runs host-independent tests."""
TEST_PART_ENV = "INFU_TEST_PART"
"""On the newest host: ``first`` or ``second`` (module docstring); unset, all of its tests."""
SECOND_PART_MODULES = ("tests/infusenet/test_flux2_network.py",)
"""Modules that touch ComfyUI in-process only (no server) and run in the newest host's second process (FLUX.2
[klein]'s network, which only the newest host has). Chosen so that the two processes end together: with the newest
host's width-independent prompts on a narrow FLUX.1, its first process ended about 140 s before the older host's
and the second together did (0.3.75 885 s + 165 s against 913 s), so applying FLUX.2 [klein] (about 60 s) went back
to the first; with it in the second, the second ended 80-90 s after the first. ``INFU_SECOND_PART_MODULES`` (paths
separated by spaces) names others instead."""


def second_part_modules() -> tuple[str, ...]:
    named = os.environ.get("INFU_SECOND_PART_MODULES")
    return tuple(named.split()) if named is not None else SECOND_PART_MODULES


def needs_host(has_feature: bool, lacking: str):
    """Mark a test that applies only to ComfyUI releases that have a feature (``lacking`` says what)."""
    return pytest.mark.skipif(not has_feature, reason=f"not applicable to ComfyUI {comfyui_version()}: {lacking}")


def newest_host_only(why: str):
    """Mark a test, or a whole module (``pytestmark = newest_host_only(...)``), that touches no ComfyUI code:
    files of this repository, this pack's pure-Python parts, libraries every host's environment pins to the
    same version. ``why`` says what it exercises. A test that imports comfy, starts a server, or calls a part
    of the pack that calls ComfyUI must not carry it."""
    return getattr(pytest.mark, HOST_INDEPENDENT)(why)


def leaves_host_independent_tests() -> str | None:
    """The newest host's name when this pytest run is one host of several and not the newest, else None."""
    newest, this = os.environ.get(NEWEST_HOST_ENV), os.environ.get("INFU_HOST_NAME")
    return newest if newest and this and this != newest else None


def per_module(items) -> dict[str, int]:
    return dict(sorted(Counter(item.nodeid.split("::", 1)[0] for item in items).items()))


def select_for_this_host(config, items: list) -> None:
    """``pytest_collection_modifyitems``: deselect the host-independent tests on every host but the newest, keep the
    newest host's part (``INFU_TEST_PART``), and write ``$INFU_REPORTS/<host>.newest-only.json`` (what was left to the
    newest host, or run here for all)."""
    marked = [item for item in items if item.get_closest_marker(HOST_INDEPENDENT) is not None]
    newest = leaves_host_independent_tests()
    part = "" if newest else os.environ.get(TEST_PART_ENV, "")
    if part not in ("", "first", "second"):
        raise pytest.UsageError(f"{TEST_PART_ENV} must be 'first' or 'second', not {part!r}")
    marked_ids = set(map(id, marked))
    second_modules = second_part_modules()

    def runs_here(item) -> bool:
        if id(item) in marked_ids:
            return not newest and part != "first"
        if part:
            return (item.nodeid.split("::", 1)[0] in second_modules) == (part == "second")
        return True

    dropped = [item for item in items if not runs_here(item)]
    if dropped:
        dropped_ids = set(map(id, dropped))
        items[:] = [item for item in items if id(item) not in dropped_ids]
        config.hook.pytest_deselected(items=dropped)
    reports, host = os.environ.get("INFU_REPORTS"), os.environ.get("INFU_HOST_NAME")
    if reports and host and part != "first":  # the newest host's ``second`` part writes what it ran
        Path(reports).mkdir(parents=True, exist_ok=True)
        (Path(reports) / f"{host}.newest-only.json").write_text(json.dumps(
            {"newest": os.environ.get(NEWEST_HOST_ENV, host), "left_to_newest": bool(newest),
             "modules": per_module(marked)}, indent=1))
