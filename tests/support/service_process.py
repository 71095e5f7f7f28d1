"""A prosum service started as its own process, as `prosum up` starts it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from prosum_platform.runtime.tansu import free_port

REPO = Path(__file__).resolve().parents[2]


class ServiceProcess:
    def __init__(self, package: str, env: dict[str, str], log: Path) -> None:
        self.package = package
        self.port = free_port()
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._handle = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", package, "serve", "--port", str(self.port)],
            cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=self._handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def ready(self, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.package} exited {self.process.returncode}: {self.tail()}"
                )
            try:
                response = httpx.get(f"{self.url}/ready", timeout=2)
                body = response.json()
                if response.status_code == 200:
                    return body
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"{self.package} not ready: {body} {self.tail()}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        try:
            return self.process.wait(timeout)
        finally:
            self._handle.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self._handle.close()

    def tail(self, size: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-size:]
        except OSError:
            return ""
