"""robot_rl.cpu.keep_freed_memory: freed tensor memory is reused instead of faulted in afresh.

Measured in fresh processes: within the test session, earlier tests leave free heap behind that
glibc reuses whatever the thresholds say.
"""

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")

PROBE = """
import sys, torch
torch.set_num_threads(1)
from robot_rl.cpu import keep_freed_memory, minor_page_faults
assert keep_freed_memory(sys.argv[1] == "keep")
x = torch.randn(10, 256, 256)  # 2.6 MB, the size of one critic-ensemble activation
(x * 2).sum()
f0 = minor_page_faults()
for _ in range(20):
    y = x * 2  # a fresh 2.6 MB block each time, freed at the next iteration
    del y
print((minor_page_faults() - f0) / 20)
"""


def faults_per_cycle(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return float(out.stdout.strip().splitlines()[-1])


def test_keeping_freed_memory_removes_the_page_faults_of_repeated_large_tensors():
    default, kept = faults_per_cycle("default"), faults_per_cycle("keep")
    # glibc's initial thresholds unmap each freed block: every new one faults in its ≈ 640 pages.
    assert default > 300
    assert kept < default / 10  # seen: 0–32 against ≈ 640
