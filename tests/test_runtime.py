import json
import subprocess
import sys

import pytest

from tradingbot.runtime import retain_freed_memory

# In a fresh process: start from a malloc that gives every freed block back to the OS, apply a
# RunConfig's settings, then repeat what an update does to memory, tens of MiB of tensors alive
# together and freed together, and count the page faults of the rounds after the first two.
# glibc's own defaults are no fixed baseline: their thresholds move with the allocation history,
# and in this pattern they return the memory in some processes and keep it in others.
SCRIPT = """
import ctypes, json, resource, sys
libc = ctypes.CDLL("libc.so.6")
# PR_SET_THP_DISABLE: with transparent huge pages one fault can map 2 MiB.
libc.prctl(41, 1, 0, 0, 0)
# M_MMAP_THRESHOLD and M_TRIM_THRESHOLD at 128 KiB, fixed: 4 MiB blocks are mmapped and freed
# with munmap.
libc.mallopt(-3, 128 << 10)
libc.mallopt(-1, 128 << 10)
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
    returned, retained = _run(retain=False), _run(retain=True)
    assert returned["threads"] == retained["threads"] == 2
    # Returned to the OS after every round, the 96 MiB are faulted in again each round (24,576
    # pages of 4 KiB); with the retained heap the rounds after the first reuse it.
    assert returned["faults"] > 20_000
    assert retained["faults"] < 0.05 * returned["faults"]
