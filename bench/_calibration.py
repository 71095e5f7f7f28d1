"""How fast this machine runs plain Python right now, printed beside a benchmark's figures.

The development machine is a shared VM whose speed changes from day to day (the same code has
measured twice as fast on one day as on another); this figure lets runs on different days, or
machines, be compared.
"""

from __future__ import annotations

import time


def cpu_check() -> str:
    """The best of three runs of a loop of 5 million integer additions."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for n in range(5_000_000):
            total += n
        best = min(best, time.perf_counter() - started)
    return f"CPU check: 5M Python additions in {best * 1000:.0f} ms (best of 3; lower is faster)"
