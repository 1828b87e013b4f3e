"""kgedge.train.memory: training processes keep freed blocks instead of page-faulting them back in."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

# Allocate, touch and free a 64 MiB tensor (over glibc's largest dynamic mmap threshold, 32 MiB),
# then count the page faults of doing it again, before and after retain_freed_memory().
_PROBE = """
import json, resource, torch
from kgedge.train.memory import retain_freed_memory

def faults_of_a_reallocation():
    torch.ones(16 * 2**20)  # allocated, touched, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 * 2**20)  # and again
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

plain = faults_of_a_reallocation()
retained = retain_freed_memory()
# the first blocks after the switch still come from the OS while the heap grows to fit them
after = [faults_of_a_reallocation() for _ in range(12)]
print(json.dumps({"plain": plain, "retained": retained, "after": after[-3:]}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_a_reallocated_block_is_reused_without_page_faults() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    probe = json.loads(out.stdout)
    if not probe["retained"]:
        pytest.skip("not glibc: nothing to retain")
    assert probe["plain"] > 4_000  # 64 MiB of 4 KiB pages faulted in again (fewer with huge pages)
    assert max(probe["after"]) < probe["plain"] / 10  # steady state: the block is reused as it is


def test_retain_freed_memory_is_idempotent() -> None:
    from kgedge.train.memory import retain_freed_memory

    assert retain_freed_memory() == retain_freed_memory()
