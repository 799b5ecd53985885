"""robot_rl.cpu.keep_freed_memory: freed tensor memory is reused instead of faulted in afresh."""

import platform

import pytest
import torch

from robot_rl.cpu import keep_freed_memory, minor_page_faults

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


def _faults_per_cycle(cycles: int = 20) -> float:
    x = torch.randn(10, 256, 256)  # 2.6 MB, the size of one critic-ensemble activation
    (x * 2).sum()  # warm up
    f0 = minor_page_faults()
    for _ in range(cycles):
        y = x * 2  # a fresh 2.6 MB block each time, freed at the next iteration
        del y
    return (minor_page_faults() - f0) / cycles


def test_keeping_freed_memory_removes_the_page_faults_of_repeated_large_tensors():
    try:
        assert keep_freed_memory(False)
        default = _faults_per_cycle()
        assert keep_freed_memory(True)
        kept = _faults_per_cycle()
    finally:
        keep_freed_memory(True)
    # glibc's defaults unmap each freed block: every new one faults in its ≈ 640 pages.
    assert default > 300
    assert kept < 10
