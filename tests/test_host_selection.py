"""Host-independent tests (tests/host_features.py, newest_host_only) are deselected on every host of a
scripts/test.sh run but the newest, never skipped, and the per-host summary lists what each host left to it;
run alone, on one host, they run. Checked by collecting two modules in a child pytest with each environment."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from devtools.comfy_env import PACK_ROOT
from scripts.test_summary import host_independent_lines
from tests.host_features import SECOND_PART_MODULES, newest_host_only

pytestmark = newest_host_only("the test harness's own selection logic, run in a child pytest")

MODULES = ["tests/test_example_photos.py", "tests/test_no_skips.py"]
ON_EVERY_HOST = ["tests/test_example_photos.py::test_the_server_lists_every_example_photo_for_load_image",
                 "tests/test_example_photos.py::test_a_users_file_of_the_same_name_is_left_alone"]
ONCE = {"tests/test_example_photos.py": 2, "tests/test_no_skips.py": 1}


def collect(tmp_path, modules=MODULES, **env) -> tuple[list[str], str]:
    """The node ids a child pytest collects from ``modules`` with ``env`` added, and its last output line."""
    base = {k: v for k, v in os.environ.items() if k not in ("INFU_HOST_NAME", "INFU_NEWEST_HOST", "INFU_REPORTS",
                                                                  "INFU_TEST_PART")}
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                          f"--basetemp={tmp_path / 'child'}", *modules], cwd=PACK_ROOT, env={**base, **env},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    return [line for line in lines if "::" in line], lines[-1]


def test_an_older_host_leaves_them_to_the_newest_and_the_summary_says_which(tmp_path):
    collected, last = collect(tmp_path, INFU_HOST_NAME="0.3.75", INFU_NEWEST_HOST="0.30.0",
                              INFU_REPORTS=str(tmp_path))
    assert collected == ON_EVERY_HOST
    assert "(3 deselected)" in last and "skipped" not in last, last
    report = json.loads((tmp_path / "0.3.75.newest-only.json").read_text())
    assert report == {"newest": "0.30.0", "left_to_newest": True, "modules": ONCE}
    assert host_independent_lines(tmp_path / "0.3.75.newest-only.json") == [
        "left to the newest host (ComfyUI 0.30.0), the same on every host: 3 tests",
        "    tests/test_example_photos.py: 2", "    tests/test_no_skips.py: 1"]


def test_the_newest_host_runs_them_for_every_host(tmp_path):
    collected, last = collect(tmp_path, INFU_HOST_NAME="0.30.0", INFU_NEWEST_HOST="0.30.0",
                              INFU_REPORTS=str(tmp_path))
    assert len(collected) == 5 and "deselected" not in last, last
    report = json.loads((tmp_path / "0.30.0.newest-only.json").read_text())
    assert report == {"newest": "0.30.0", "left_to_newest": False, "modules": ONCE}
    assert host_independent_lines(tmp_path / "0.30.0.newest-only.json")[0] == \
        "run here once for every host (the same on every host): 3 tests"


def test_one_host_alone_runs_everything(tmp_path):
    collected, last = collect(tmp_path, INFU_HOST_NAME="user")  # scripts/test.sh with COMFYUI_DIR, or plain pytest
    assert len(collected) == 5 and "deselected" not in last, last


def test_the_newest_hosts_two_processes_share_its_tests_without_overlap(tmp_path):
    """Side by side, the newest host's tests run in two processes (INFU_TEST_PART): together they collect what one
    process collects, each test once; the second gets the host-independent tests and the modules of
    SECOND_PART_MODULES (here, to collect fast, a module named instead), and writes the report of what ran for every
    host."""
    module = "tests/test_timed_out_prompt.py"
    modules = [*MODULES, module]
    listed = [f"{module}::test_a_timed_out_prompt_is_interrupted_and_the_prompts_behind_it_dropped"]
    newest = {"INFU_HOST_NAME": "0.30.0", "INFU_NEWEST_HOST": "0.30.0", "INFU_REPORTS": str(tmp_path),
              "INFU_SECOND_PART_MODULES": module}
    first, last = collect(tmp_path, modules, **newest, INFU_TEST_PART="first")
    assert first == ON_EVERY_HOST and "(4 deselected)" in last, last
    assert not (tmp_path / "0.30.0.newest-only.json").exists()
    second, last = collect(tmp_path, modules, **newest, INFU_TEST_PART="second")
    assert len(second) == 4 and second[-1:] == listed and "(2 deselected)" in last, last
    report = json.loads((tmp_path / "0.30.0.newest-only.json").read_text())
    assert report == {"newest": "0.30.0", "left_to_newest": False, "modules": ONCE}
    everything, _ = collect(tmp_path, modules, INFU_HOST_NAME="0.30.0", INFU_NEWEST_HOST="0.30.0")
    assert sorted(first + second) == sorted(everything)
    older, _ = collect(tmp_path, modules, **{**newest, "INFU_HOST_NAME": "0.3.75"}, INFU_TEST_PART="second")
    assert older == ON_EVERY_HOST + listed  # the part applies to the newest host only


def test_the_second_part_names_modules_that_start_no_server():
    """The modules the newest host's second process takes start no ComfyUI server: the second process must not load
    a second copy of the test models beside the first process's servers."""
    for module in SECOND_PART_MODULES:
        source = (PACK_ROOT / module).read_text()
        assert not any(word in source for word in ("comfy_server", "bases_server", "start_server", "ComfyServer")), module


def junit(path, passed: int, failed: int = 0) -> None:
    cases = [f'<testcase classname="m" name="ok{i}" time="1"/>' for i in range(passed)]
    cases += [f'<testcase classname="m" name="bad{i}" time="1"><failure message="x"/></testcase>' for i in range(failed)]
    path.write_text(f'<testsuites><testsuite>{"".join(cases)}</testsuite></testsuites>')


def summary(reports) -> tuple[int, str]:
    out = subprocess.run([sys.executable, "scripts/test_summary.py", str(reports)], cwd=PACK_ROOT,
                         capture_output=True, text=True, timeout=120)
    return out.returncode, out.stdout


def test_the_summary_counts_the_newest_hosts_two_processes_as_one_host(tmp_path):
    for name, passed, rc, seconds in (("0.3.75", 4, 0, 500), ("0.30.0", 6, 0, 700), ("0.30.0.second", 3, 0, 90)):
        junit(tmp_path / f"{name}.xml", passed)
        (tmp_path / f"{name}.rc").write_text(f"{rc}\n")
        (tmp_path / f"{name}.seconds").write_text(f"{seconds}\n")
    rc, out = summary(tmp_path)
    assert rc == 0, out
    assert "- ComfyUI 0.30.0: 9 passed, 0 failed, 0 errors, 0 skipped in 700 s (pytest exit 0); of these, 3 tests " \
           "(the host-independent ones and the modules tests/host_features.py names) ran in a second process in 90 s " \
           "(pytest exit 0)\n" in out, out
    assert "- ComfyUI 0.3.75: 4 passed" in out and "0.30.0.second:" not in out and out.endswith("13 passed, 0 failed\n")

    junit(tmp_path / "0.30.0.second.xml", 2, failed=1)
    (tmp_path / "0.30.0.second.rc").write_text("1\n")
    rc, out = summary(tmp_path)
    assert rc == 1 and out.endswith("12 passed, 1 failed\n"), out
    (tmp_path / "0.30.0.second.xml").unlink()
    rc, out = summary(tmp_path)
    assert rc == 1 and "its second process wrote no report (exit code 1)" in out, out


def test_the_summary_compares_only_the_outputs_of_the_same_width(tmp_path):
    """The hosts' workflow outputs: a 3072-wide run on both is compared pixel by pixel; one run on the newest host's
    narrow FLUX.1 (tests/test_workflows.py: ``keep_for_host_comparison``) is named, not compared."""
    from PIL import Image

    junit(tmp_path / "0.3.75.xml", 1)
    (tmp_path / "0.3.75.rc").write_text("0\n")
    for host, files in (("0.3.75", {"01_basic.png": 10, "02_pose_control.png": 10, "03_multi.png": 10}),
                        ("0.30.0", {"01_basic.png": 11, "02_pose_control.w512.png": 200})):
        (tmp_path / "outputs" / host).mkdir(parents=True)
        for name, value in files.items():
            Image.new("RGB", (4, 4), (value,) * 3).save(tmp_path / "outputs" / host / name)
    rc, out = summary(tmp_path)
    assert rc == 0, out
    assert "    01_basic vs 0.30.0: mean |difference| 1.000, max 1, identical pixels 0.0%\n" in out, out
    assert "    02_pose_control: run on a narrow FLUX.1 on 0.30.0 (02_pose_control.w512.png), not compared\n" in out, out
    assert "    03_multi: no output on 0.30.0\n" in out, out
