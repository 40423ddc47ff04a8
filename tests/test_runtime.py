import json
import subprocess
import sys

import pytest

from tradingbot.runtime import retain_freed_memory

# In a fresh process: apply a RunConfig's settings, then repeat what an update does to memory,
# tens of MiB of tensors alive together and freed together, and count the page faults of the
# rounds after the first two.
SCRIPT = """
import json, resource, sys
import torch
from tradingbot.config import RunConfig
from tradingbot.runtime import configure_process

configure_process(RunConfig(torch_threads=2, retain_freed_memory=sys.argv[1] == "1"))

def update():
    tensors = [torch.ones(1 << 20) for _ in range(24)]  # 24 x 4 MiB
    del tensors

for _ in range(2):
    update()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    update()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5
print(json.dumps({"faults": faults, "threads": torch.get_num_threads()}))
"""


def _run(retain: bool) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, "1" if retain else "0"],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_retained_memory_is_reused_without_page_faults():
    if not retain_freed_memory():  # this process too: harmless, and tells whether it is glibc
        pytest.skip("the C library is not glibc")
    default, retained = _run(retain=False), _run(retain=True)
    assert default["threads"] == retained["threads"] == 2
    # glibc's default trim threshold (at most 64 MiB) returns the freed 96 MiB to the OS after
    # every round, so each round faults most of it in again (24,576 pages of 4 KiB, fewer with
    # huge pages); with the retained heap the rounds after the first reuse it.
    assert default["faults"] > 1000
    assert retained["faults"] < 0.2 * default["faults"]
