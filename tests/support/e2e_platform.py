"""The whole platform as `prosum up --detach` runs it, for end-to-end tests: free ports, a fresh
data dir, `prosum down` (and, if that fails, the recorded processes killed) when the test ends,
the service logs for failure messages, and the development secrets the data dir holds.

Nothing here talks to a service's store or imports a service: a test sees the platform as a
user does (HTTP, the broker's topics, the chain), plus the dev secrets `prosum up` wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from prosum_cli.processes import ProcessRecord, is_ours
from prosum_ledger.adapters.evm import EvmBackend, EvmConfig
from prosum_platform.messaging import KafkaConfig
from prosum_platform.runtime.tansu import free_port

T = TypeVar("T")

PROSUM = [sys.executable, "-m", "prosum_cli.main"]
REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL_BIN = REPO_ROOT / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
SERVICE_NAMES = ("identity", "metering", "orderbook", "settlement", "ledger-adapter")
DEV_CHAIN_ID = 31337


def anvil_installed() -> bool:
    override = os.environ.get("PROSUM_ANVIL_BIN")
    return Path(override).is_file() if override else ANVIL_BIN.is_file()


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class Ports:
    kafka: int
    base: int
    chain: int

    def args(self) -> list[str]:
        return [
            "--kafka-port",
            str(self.kafka),
            "--base-port",
            str(self.base),
            "--chain-port",
            str(self.chain),
        ]


def pick_ports() -> Ports:
    """A free broker port, five free consecutive service ports and a free chain port."""
    kafka = free_port()
    for _ in range(200):
        base = random.randint(20000, 40000)
        wanted = range(base + 1, base + 1 + len(SERVICE_NAMES))
        if kafka not in wanted and all(_port_free(p) for p in wanted):
            break
    else:
        raise RuntimeError("no five free consecutive ports found")
    taken = {kafka, *wanted}
    for _ in range(200):
        chain = free_port()
        if chain not in taken:
            return Ports(kafka, base, chain)
    raise RuntimeError("no free port for the chain found")


def _env(extra: dict[str, str]) -> dict[str, str]:
    # The developer's PROSUM_* settings must not leak in; where anvil is may.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PROSUM_") or k == "PROSUM_ANVIL_BIN"
    }
    env.update(COLUMNS="200", PYTHONUNBUFFERED="1", **extra)
    return env


class PlatformError(AssertionError):
    """The platform did not do what the test waited for (or did something it must not)."""

    with_logs = False  # True once the service logs are in the message or its notes


@dataclass
class Platform:
    """One `prosum up --detach` in its own data dir, with the settings given as environment."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    ports: Ports = field(default_factory=pick_ports)
    started: bool = False
    up_output: str = ""
    startup_s: float = 0.0

    # -- life cycle ----------------------------------------------------------------------------
    def _run(self, *args: str | Path, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PROSUM, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env(self.env),
            cwd=REPO_ROOT,
            check=False,
        )

    def up(self, timeout: float = 120.0) -> None:
        began = time.monotonic()
        self.started = True  # even a failed `up` may leave a state file for `down` to clear
        try:
            result = self._run(
                "up",
                "--data-dir",
                self.data_dir,
                *self.ports.args(),
                "--detach",
                "--timeout",
                str(int(timeout - 10)),
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise PlatformError(
                f"`prosum up` did not finish within {timeout:.0f} s\n{self.logs()}"
            ) from exc
        self.up_output = result.stdout + result.stderr
        self.startup_s = time.monotonic() - began
        if result.returncode != 0:
            raise PlatformError(
                f"`prosum up` exited {result.returncode}:\n{self.up_output}\n{self.logs()}"
            )

    def down(self) -> None:
        if not self.started or not self.state_file.exists():
            return
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._run("down", "--data-dir", self.data_dir, timeout=90)
        self._kill_recorded()

    def _kill_recorded(self) -> None:
        """Last resort when `prosum down` itself failed: the process groups it recorded."""
        try:
            state = self.state()
        except (OSError, ValueError):
            return
        records = [s["process"] for s in state.get("services", [])]
        records += [state[k]["process"] for k in ("chain", "broker") if state.get(k)]
        for raw in records:
            with contextlib.suppress(ValueError):
                record = ProcessRecord.from_json(raw)
                if is_ours(record):
                    with contextlib.suppress(OSError):
                        os.killpg(record.pid, signal.SIGKILL)

    # -- where things are ---------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.data_dir / "run" / "prosum.json"

    def state(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.state_file.read_text())
        return loaded

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports.base + 1 + SERVICE_NAMES.index(service)}"

    @property
    def chain_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.chain}"

    def kafka(self) -> KafkaConfig:
        return KafkaConfig(
            bootstrap_servers=f"127.0.0.1:{self.ports.kafka}",
            client_id="prosum-e2e",
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )

    def ops_secret(self) -> tuple[str, str]:
        """Identity's first ops client, as development generated it into the data dir."""
        secrets = json.loads((self.data_dir / "identity" / "dev-secrets.json").read_text())
        return self.env.get("PROSUM_IDENTITY_OPS_CLIENT_ID", "ops"), secrets["ops_client_secret"]

    def chain(self) -> EvmBackend:
        """A read-only view of the chain with the ledger adapter's development keys, to ask it
        for balances the way nobody else in the platform may."""
        folder = self.data_dir / "ledger"
        secrets = json.loads((folder / "dev-secrets.json").read_text())
        return EvmBackend(
            EvmConfig(
                rpc_url=self.chain_url,
                chain_id=DEV_CHAIN_ID,
                operator_private_key=secrets["evm_operator_key"],
                keystore_path=folder / "keys" / "participants.keys",
                keystore_key=secrets["keystore_key"],
            )
        )

    # -- diagnostics --------------------------------------------------------------------------
    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.data_dir / "logs" / f"{name}.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return f"----- {name}: no log at {path}"
        tail = "\n".join(text.splitlines()[-lines:])
        return f"----- {name} ({path}), last {lines} lines:\n{tail}"

    def logs(self, *names: str, lines: int = 40) -> str:
        return "\n".join(self.log_tail(n, lines) for n in (names or SERVICE_NAMES))

    async def eventually(
        self,
        check: Callable[[], Awaitable[T | None]],
        what: str,
        *,
        timeout: float = 30.0,
        logs: tuple[str, ...] = (),
        interval: float = 0.2,
        last: Callable[[], str] | None = None,
    ) -> T:
        """Polls ``check`` until it returns something truthy, for at most ``timeout`` s; on
        failure says what was awaited, what was last seen, and the tails of the logs of the
        services concerned (all of them when none are named). An error ``check`` raises ends
        the wait at once, except a transport error (asked again)."""
        deadline = time.monotonic() + timeout
        error: BaseException | None = None
        while True:
            try:
                found = await check()
                error = None
            except httpx.TransportError as exc:  # a service busy or restarting: ask again
                found, error = None, exc
            except PlatformError as exc:  # the check saw something that will not get better
                if not exc.with_logs:
                    exc.add_note(f"while waiting for {what}\n{self.logs(*logs)}")
                    exc.with_logs = True
                raise
            if found:
                return found
            if time.monotonic() >= deadline:
                seen = last() if last is not None else ""
                failure = PlatformError(
                    f"timed out after {timeout:.0f} s waiting for {what}"
                    + (f"\nlast seen: {seen}" if seen else "")
                    + (f"\nlast error: {error!r}" if error is not None else "")
                    + "\n"
                    + self.logs(*logs)
                )
                failure.with_logs = True
                raise failure
            await asyncio.sleep(interval)
