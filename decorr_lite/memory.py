"""Peak memory of a stretch of code, on a CPU or a CUDA device: what training records per step
and what the benchmarks record per case.

CUDA: torch's allocator peak. CPU (Linux): the process's resident-set high-water mark, reset
through /proc/self/clear_refs (elsewhere it counts from the process start).
"""

from __future__ import annotations

import resource

import torch


def synchronize(device: str) -> None:
    """Wait for the work queued on a CUDA device, so that a timer or a memory counter sees it done."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> int:
    """Reset the resident-set high-water mark and return the current resident set (bytes)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # not Linux, or not allowed: the peak then counts from the process start
    current = _rss_bytes("VmRSS")
    return current if current is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _cpu_peak() -> int:
    peak = _rss_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def start_peak_memory(device: str | torch.device = "cpu") -> int:
    """Start a peak-memory measurement on ``device``; returns the baseline for ``peak_memory_since``.

    CUDA: torch's allocator peak is reset and the memory allocated now is the baseline. CPU: the
    process's resident-set high-water mark is reset and the resident set now is the baseline.
    """
    device = str(device)
    synchronize(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device)
    return _reset_cpu_peak()


def peak_memory_since(device: str | torch.device, baseline: int) -> int:
    """Bytes of the peak above ``baseline`` since ``start_peak_memory`` (0 if none)."""
    device = str(device)
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) if device.startswith("cuda") else _cpu_peak()
    return max(int(peak - baseline), 0)
