"""Named crash points for failure tests, armed only through ``PROSUM_FAULTS``.

``PROSUM_FAULTS=relay.after_publish`` makes a process exit abruptly (no cleanup, like
``kill -9``) the first time it reaches that point. Unset, every check is a dict lookup.
"""

from __future__ import annotations

import os
import sys


def _armed() -> frozenset[str]:
    return frozenset(p.strip() for p in os.environ.get("PROSUM_FAULTS", "").split(",") if p)


def crash_point(name: str) -> None:
    if name in _armed():
        sys.stderr.write(f"prosum: fault injected at {name}, exiting hard\n")
        sys.stderr.flush()
        os._exit(137)
