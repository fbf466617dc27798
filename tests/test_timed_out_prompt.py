"""A prompt that outlives its test's wait is interrupted and the queue emptied before the wait gives up, so the
next test's prompt runs at once instead of queueing behind it (devtools/server.py, ComfyServer.cancel_all).
Checked on the shared test server with a long chain of ComfyUI's own blur node: interruptible between nodes,
no model needed."""
from __future__ import annotations

import time

import pytest

from devtools.server import running_servers

SLOW_NODES = 256  # 512x512 blurs of radius 31: well over a minute on a loaded 2-core machine, seconds on any


def blur_chain(nodes: int, size: int, color: int) -> dict:
    """EmptyImage -> ``nodes`` x ImageBlur -> PreviewImage; ``color`` makes each chain a new cache key."""
    prompt = {"1": {"class_type": "EmptyImage", "inputs": {"width": size, "height": size, "batch_size": 1,
                                                          "color": color}}}
    for i in range(2, nodes + 2):
        prompt[str(i)] = {"class_type": "ImageBlur", "inputs": {"image": [str(i - 1), 0], "blur_radius": 31,
                                                               "sigma": 10.0}}
    prompt[str(nodes + 2)] = {"class_type": "PreviewImage", "inputs": {"images": [str(nodes + 1), 0]}}
    return prompt


def wait_until_running(server, prompt_id: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while prompt_id not in server.queue()[0]:
        assert time.monotonic() < deadline, f"{prompt_id} did not start in {timeout:.0f} s: {server.queue()}"
        time.sleep(0.2)


def test_a_timed_out_prompt_is_interrupted_and_the_prompts_behind_it_dropped(comfy_server):
    assert comfy_server in running_servers()  # what tests/conftest.py empties after a failed test
    slow = comfy_server.submit(blur_chain(SLOW_NODES, 512, color=0x101010))
    behind = comfy_server.submit(blur_chain(SLOW_NODES, 512, color=0x202020))
    wait_until_running(comfy_server, slow)

    with pytest.raises(TimeoutError, match=rf"{slow} did not finish in 1 s; interrupted \['{slow}'\], "
                                           r"dropped 1 waiting"):
        comfy_server.wait(slow, timeout=1.0)
    assert comfy_server.queue() == ([], [])
    stopped = comfy_server.get_json(f"/history/{slow}")[slow]["status"]
    assert stopped["status_str"] == "error"
    assert "execution_interrupted" in [kind for kind, _ in stopped["messages"]]
    assert comfy_server.get_json(f"/history/{behind}") == {}  # dropped before it ran

    started = time.monotonic()
    quick = comfy_server.run(blur_chain(1, 64, color=0x303030), timeout=300)
    assert quick.status == "success", quick.error
    assert quick.images(), quick.history
    print(f"the next prompt ran in {time.monotonic() - started:.1f} s")
