"""The record of a running platform: ``<data dir>/run/prosum.json``.

``prosum up`` rewrites it after every process it starts, so that ``prosum down`` can clean up
even when ``up`` itself was killed half-way through starting.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from .processes import ProcessRecord, is_ours

STATE_VERSION = 1


class StateError(Exception):
    """The state file exists but cannot be understood."""


def run_dir(data_dir: Path) -> Path:
    return data_dir / "run"


def state_path(data_dir: Path) -> Path:
    return run_dir(data_dir) / "prosum.json"


def logs_dir(data_dir: Path) -> Path:
    return data_dir / "logs"


@dataclass
class ServiceRecord:
    name: str
    package: str
    port: int
    url: str
    log: str
    process: ProcessRecord

    @property
    def docs_url(self) -> str:
        return f"{self.url}/docs"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "package": self.package,
            "pid": self.process.pid,
            "port": self.port,
            "url": self.url,
            "docs_url": self.docs_url,
            "log": self.log,
            "process": self.process.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> ServiceRecord:
        if not isinstance(data, dict):
            raise ValueError("a service record must be an object")
        return cls(
            name=_str(data, "name"),
            package=_str(data, "package"),
            port=_int(data, "port"),
            url=_str(data, "url"),
            log=_str(data, "log"),
            process=ProcessRecord.from_json(data.get("process")),
        )


@dataclass
class BrokerRecord:
    host: str
    port: int
    log: str
    process: ProcessRecord

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "bootstrap": self.bootstrap,
            "pid": self.process.pid,
            "log": self.log,
            "process": self.process.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> BrokerRecord:
        if not isinstance(data, dict):
            raise ValueError("the broker record must be an object")
        return cls(
            host=_str(data, "host"),
            port=_int(data, "port"),
            log=_str(data, "log"),
            process=ProcessRecord.from_json(data.get("process")),
        )


@dataclass
class ChainRecord:
    """The development chain: its launcher's process (anvil runs in the same process group)."""

    host: str
    port: int
    chain_id: int
    state_dir: str
    log: str
    process: ProcessRecord

    @property
    def rpc_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def to_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "port": self.port,
            "rpc_url": self.rpc_url,
            "chain_id": self.chain_id,
            "state_dir": self.state_dir,
            "pid": self.process.pid,
            "log": self.log,
            "process": self.process.to_json(),
        }

    @classmethod
    def from_json(cls, data: Any) -> ChainRecord:
        if not isinstance(data, dict):
            raise ValueError("the chain record must be an object")
        return cls(
            host=_str(data, "host"),
            port=_int(data, "port"),
            chain_id=_int(data, "chain_id"),
            state_dir=_str(data, "state_dir"),
            log=_str(data, "log"),
            process=ProcessRecord.from_json(data.get("process")),
        )


@dataclass
class PlatformState:
    data_dir: str
    started_at: str
    up: ProcessRecord
    detached: bool = False
    ready: bool = False
    broker: BrokerRecord | None = None
    chain: ChainRecord | None = None
    services: list[ServiceRecord] = field(default_factory=list)

    def children(self) -> list[ProcessRecord]:
        """Everything ``up`` started, in the order to stop it: services, then the chain and the
        broker they use."""
        found = [s.process for s in self.services]
        if self.chain is not None:
            found.append(self.chain.process)
        if self.broker is not None:
            found.append(self.broker.process)
        return found

    def live_processes(self) -> list[ProcessRecord]:
        return [r for r in [self.up, *self.children()] if is_ours(r)]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "data_dir": self.data_dir,
            "started_at": self.started_at,
            "up_pid": self.up.pid,
            "up": self.up.to_json(),
            "detached": self.detached,
            "ready": self.ready,
            "broker": self.broker.to_json() if self.broker else None,
            "chain": self.chain.to_json() if self.chain else None,
            "services": [s.to_json() for s in self.services],
        }

    @classmethod
    def from_json(cls, data: Any) -> PlatformState:
        if not isinstance(data, dict):
            raise ValueError("the state must be an object")
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unknown state version {data.get('version')!r}")
        services = data.get("services", [])
        if not isinstance(services, list):
            raise ValueError("services must be a list")
        broker = data.get("broker")
        chain = data.get("chain")  # absent in the files of runs from before the chain
        return cls(
            data_dir=_str(data, "data_dir"),
            started_at=_str(data, "started_at"),
            up=ProcessRecord.from_json(data.get("up")),
            detached=bool(data.get("detached", False)),
            ready=bool(data.get("ready", False)),
            broker=BrokerRecord.from_json(broker) if broker is not None else None,
            chain=ChainRecord.from_json(chain) if chain is not None else None,
            services=[ServiceRecord.from_json(s) for s in services],
        )


def _str(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string, not {value!r}")
    return value


def _int(data: dict[str, Any], key: str) -> int:
    value = data.get(key)
    if not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, not {value!r}")
    return value


def read_state(data_dir: Path) -> PlatformState | None:
    path = state_path(data_dir)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc}") from exc
    try:
        return PlatformState.from_json(json.loads(text))
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise StateError(f"{path} is not a prosum state file: {exc}") from exc


def write_state(data_dir: Path, state: PlatformState) -> None:
    """Replace the state file in one step, so a reader never sees half of it."""
    path = state_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".prosum.", suffix=".json.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(state.to_json(), handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_state(data_dir: Path) -> bool:
    try:
        state_path(data_dir).unlink()
    except FileNotFoundError:
        return False
    return True


def try_lock(data_dir: Path) -> IO[bytes] | None:
    """Hold ``run/up.lock`` so two ``prosum up`` on one data dir cannot race past the checks.

    Returns the open lock file (keep it open to keep the lock) or None if another process
    holds it.
    """
    path = run_dir(data_dir) / "up.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("ab")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle
