"""The ways a test may be left out on a host.

* ``needs_host``: a feature the ComfyUI under test does not have. The reason names the ComfyUI version and what
  it lacks, and scripts/test.sh prints it in the per-host summary.
* ``newest_host_only``: a test whose subject is the same on every ComfyUI. When scripts/test.sh runs several
  hosts it runs on the last one (the newest) only; on the others it is deselected, not skipped, and the summary
  lists per test module how many tests each host left to the newest one. Run alone (plain pytest,
  ``COMFYUI_DIR=...``, or ``INFU_HOSTS`` naming one host) it always runs.

Side by side, scripts/test.sh runs the newest host's tests in two pytest processes (``INFU_TEST_PART``): ``host``,
what touches ComfyUI, from the start; ``independent``, the host-independent tests, once an older host is done, so
that the hosts end at about the same time.
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
"""On the newest host: ``host`` (only the tests that touch ComfyUI) or ``independent`` (only the host-independent
ones); unset, both."""


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
    """``pytest_collection_modifyitems``: deselect the host-independent tests on every host but the newest, and
    write ``$INFU_REPORTS/<host>.newest-only.json`` (what was left to the newest host, or run here for all)."""
    marked = [item for item in items if item.get_closest_marker(HOST_INDEPENDENT) is not None]
    newest = leaves_host_independent_tests()
    part = "" if newest else os.environ.get(TEST_PART_ENV, "")
    if part not in ("", "host", "independent"):
        raise pytest.UsageError(f"{TEST_PART_ENV} must be 'host' or 'independent', not {part!r}")
    marked_ids = set(map(id, marked))
    run_marked, run_unmarked = not newest and part != "host", part != "independent"
    dropped = [item for item in items if not (run_marked if id(item) in marked_ids else run_unmarked)]
    if dropped:
        dropped_ids = set(map(id, dropped))
        items[:] = [item for item in items if id(item) not in dropped_ids]
        config.hook.pytest_deselected(items=dropped)
    reports, host = os.environ.get("INFU_REPORTS"), os.environ.get("INFU_HOST_NAME")
    if reports and host and part != "host":  # the newest host's ``independent`` part writes what it ran
        Path(reports).mkdir(parents=True, exist_ok=True)
        (Path(reports) / f"{host}.newest-only.json").write_text(json.dumps(
            {"newest": os.environ.get(NEWEST_HOST_ENV, host), "left_to_newest": bool(newest),
             "modules": per_module(marked)}, indent=1))
