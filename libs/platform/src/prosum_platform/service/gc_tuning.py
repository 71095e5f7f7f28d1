"""Garbage collector settings for a service process.

A service allocates many short-lived objects per request (rows, dicts, envelopes) and keeps few.
With CPython's default thresholds (700 allocations) the young generation is collected every few
hundred objects and the old generations are scanned over and over while a large batch is being
built: measured on metering's ingestion, about 16% of the CPU. Collecting the young generation
every 50,000 allocations keeps cycles from piling up while taking that cost down to a few
percent. Objects built at start-up are frozen out of the scans once the service is up.
"""

from __future__ import annotations

import gc

YOUNG = 50_000
MIDDLE = 20
OLD = 20


def tune_gc() -> None:
    """Set the thresholds for a long-running service process (idempotent)."""
    gc.set_threshold(YOUNG, MIDDLE, OLD)


def freeze_startup_objects() -> None:
    """Move everything alive now (modules, settings, compiled statements) out of the
    collector's scans: it lives as long as the process."""
    gc.collect()
    gc.freeze()
