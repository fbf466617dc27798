"""No test hides a missing feature behind a skip: a missing test dependency fails, naming the install.
The only way to leave a test out is tests/host_features.py: a ComfyUI release that lacks a feature."""
from __future__ import annotations

import re

from devtools.comfy_env import PACK_ROOT
from tests.host_features import newest_host_only

pytestmark = newest_host_only("reads the test files of this repository")

SKIPS = re.compile(r"importorskip|pytest\.skip\(|mark\.skip|mark\.skipif|mark\.xfail|pytest\.xfail\(")


def test_no_test_is_skipped_or_expected_to_fail():
    me = __file__.rsplit("/", 1)[-1]
    found = [f"{path.relative_to(PACK_ROOT)}:{number}: {line.strip()}"
             for path in sorted((PACK_ROOT / "tests").rglob("*.py")) if path.name not in (me, "host_features.py")
             for number, line in enumerate(path.read_text().splitlines(), 1) if SKIPS.search(line)]
    assert found == [], "tests that skip instead of failing:\n" + "\n".join(found)

