"""Recognising and stopping the processes a ``prosum up`` started, possibly from another shell.

A recorded pid alone is not proof: after a reboot or a long time the number may belong to an
unrelated process. A process counts as ours only if it still exists, is not a zombie, started at
the recorded kernel tick and its command line still contains the recorded markers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessRecord:
    pid: int
    start_ticks: int | None
    markers: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_ticks": self.start_ticks, "markers": list(self.markers)}

    @classmethod
    def from_json(cls, data: Any) -> ProcessRecord:
        if not isinstance(data, dict):
            raise ValueError("a process record must be an object")
        pid = data.get("pid")
        ticks = data.get("start_ticks")
        markers = data.get("markers", [])
        if not isinstance(pid, int) or pid <= 0:
            raise ValueError(f"bad pid {pid!r}")
        if ticks is not None and not isinstance(ticks, int):
            raise ValueError(f"bad start_ticks {ticks!r}")
        if not isinstance(markers, list) or not all(isinstance(m, str) for m in markers):
            raise ValueError(f"bad markers {markers!r}")
        return cls(pid, ticks, tuple(markers))


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """State letter and start time (clock ticks since boot) from /proc/<pid>/stat."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or parentheses.
    fields = raw.rsplit(")", 1)[-1].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _cmdline(pid: int) -> str | None:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode(errors="replace")


def identify(pid: int, markers: Sequence[str]) -> ProcessRecord:
    stat = _proc_stat(pid)
    return ProcessRecord(pid, stat[1] if stat else None, tuple(markers))


def is_ours(record: ProcessRecord) -> bool:
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # We started these processes as ourselves; one we may not signal is someone else's.
        return False
    if not _PROC.is_dir():
        return True  # no /proc (not Linux): existence is all we can check
    stat = _proc_stat(record.pid)
    if stat is None:
        return False
    state, ticks = stat
    if state in ("Z", "X"):
        return False
    if record.start_ticks is not None and ticks != record.start_ticks:
        return False
    cmdline = _cmdline(record.pid)
    return cmdline is None or all(marker in cmdline for marker in record.markers)


def _signal(record: ProcessRecord, sig: signal.Signals, *, group: bool) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        # Only signal a whole group the process leads: the pid of a process that did not start
        # its own session may share a group with the user's shell.
        if group and os.getpgid(record.pid) == record.pid:
            os.killpg(record.pid, sig)
        else:
            os.kill(record.pid, sig)


def signal_process(record: ProcessRecord, sig: signal.Signals, *, group: bool = True) -> bool:
    """Send ``sig`` if the process is still ours; says whether it was sent."""
    if not is_ours(record):
        return False
    _signal(record, sig, group=group)
    return True


def wait_gone(
    records: Sequence[ProcessRecord],
    timeout: float,
    *,
    should_hurry: Callable[[], bool] | None = None,
) -> list[ProcessRecord]:
    """Wait until none of ``records`` is alive; returns those still alive at the deadline."""
    deadline = time.monotonic() + timeout
    alive = [r for r in records if is_ours(r)]
    while alive and time.monotonic() < deadline:
        if should_hurry is not None and should_hurry():
            break
        time.sleep(0.1)
        alive = [r for r in alive if is_ours(r)]
    return alive


@dataclass(frozen=True)
class StopResult:
    stopped: list[ProcessRecord]
    """Ours and running when asked to stop."""
    killed: list[ProcessRecord]
    """Needed SIGKILL after the grace period."""
    survivors: list[ProcessRecord]
    """Still alive even after SIGKILL (e.g. stuck in the kernel)."""


def stop_processes(
    records: Sequence[ProcessRecord],
    *,
    grace: float = 10.0,
    should_hurry: Callable[[], bool] | None = None,
) -> StopResult:
    """SIGTERM each process group, SIGKILL whatever outlives ``grace``."""
    running = [r for r in records if signal_process(r, signal.SIGTERM)]
    lingering = wait_gone(running, grace, should_hurry=should_hurry)
    for record in lingering:
        signal_process(record, signal.SIGKILL)
    survivors = wait_gone(lingering, 5.0)
    return StopResult(running, lingering, survivors)


def log_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def log_tail(path: Path, *, offset: int = 0, lines: int = 30) -> list[str]:
    """The last ``lines`` lines of ``path`` written after byte ``offset``."""
    window = 64 * 1024
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            start = max(offset, size - window)
            handle.seek(start)
            data = handle.read()
    except OSError:
        return []
    text = data.decode(errors="replace").splitlines()
    if start > offset and text:
        text = text[1:]  # the first line read from the middle of the file is partial
    return text[-lines:]
