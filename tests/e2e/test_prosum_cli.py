"""End to end: ``prosum up``, ``status`` and ``down`` run the real broker, the development chain
(anvil) and the five services.

Each test starts whole processes; the ``launched`` fixture tears down whatever a test left
running, even when an assertion failed half-way. Tests that need the chain to come up are
skipped when anvil is not installed (``npm ci``, which ``scripts/setup.sh`` runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import pytest

from prosum_cli.processes import ProcessRecord, is_ours
from prosum_platform.runtime.tansu import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(240)]

READY_LINE = "services are ready"
STARTUP_TIMEOUT = 120.0
COMMAND_TIMEOUT = 60.0
PROSUM = [sys.executable, "-m", "prosum_cli.main"]
REPO_ROOT = Path(__file__).resolve().parents[2]
ANVIL_BIN = REPO_ROOT / "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil"
SERVICE_NAMES = ["identity", "metering", "orderbook", "settlement", "ledger-adapter"]


def _anvil_installed() -> bool:
    override = os.environ.get("PROSUM_ANVIL_BIN")
    return Path(override).is_file() if override else ANVIL_BIN.is_file()


needs_anvil = pytest.mark.skipif(
    not _anvil_installed(),
    reason=f"`prosum up` runs the development chain, and anvil is not installed ({ANVIL_BIN} "
    "is missing): run `npm ci` or scripts/setup.sh",
)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    # Settings of the developer's shell must not leak in; where anvil is may.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PROSUM_") or k == "PROSUM_ANVIL_BIN"
    }
    env.update(COLUMNS="200", PYTHONUNBUFFERED="1", **(extra or {}))
    return env


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


def _pick_ports() -> Ports:
    kafka = free_port()
    for _ in range(200):
        base = random.randint(20000, 40000)
        wanted = range(base + 1, base + 6)
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


def _alive(pid: int) -> bool:
    """Exists and is not a zombie (nothing reaps orphans on some machines)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def _wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _state_file(data_dir: Path) -> Path:
    return data_dir / "run" / "prosum.json"


def _read_state(data_dir: Path) -> dict[str, Any]:
    state: dict[str, Any] = json.loads(_state_file(data_dir).read_text())
    return state


def _child_pids(state: dict[str, Any]) -> list[int]:
    return [state["broker"]["pid"], state["chain"]["pid"], *(s["pid"] for s in state["services"])]


def _children_of(pid: int) -> list[int]:
    """Direct children, e.g. the anvil process the chain launcher runs."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            found.extend(int(c) for c in (task / "children").read_text().split())
    return found


def _rpc(url: str, method: str, params: list[Any] | None = None) -> Any:
    response = httpx.post(
        url,
        json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []},
        timeout=5.0,
    )
    response.raise_for_status()
    answer = response.json()
    assert "result" in answer, answer
    return answer["result"]


def _height(url: str) -> int:
    result = _rpc(url, "eth_blockNumber")
    assert isinstance(result, str) and result.startswith("0x"), result
    return int(result, 16)


class LineReader:
    """Reads a child's stdout on a thread so the test can wait for a line with a deadline."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                return False
            if line is None:
                return False
            self.lines.append(line)
            if text in line:
                return True
        return False

    def drain(self, timeout: float = 5.0) -> str:
        self._thread.join(timeout)
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return self.text()

    def text(self) -> str:
        return "".join(self.lines)


@dataclass
class Launched:
    """What the test started, so the fixture can stop it whatever happened."""

    data_dirs: list[Path] = field(default_factory=list)
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(
        self,
        *args: str | Path,
        timeout: float = COMMAND_TIMEOUT,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*PROSUM, *map(str, args)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env(extra_env),
            check=False,
        )

    def start(self, *args: str | Path) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [*PROSUM, *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=_env(),
        )
        self.processes.append(process)
        return process

    def cleanup(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(5)
        for data_dir in self.data_dirs:
            if not _state_file(data_dir).exists():
                continue
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.run("down", "--data-dir", data_dir, timeout=90)
            self._kill_recorded(data_dir)

    @staticmethod
    def _kill_recorded(data_dir: Path) -> None:
        """Last resort when `prosum down` itself failed."""
        try:
            state = _read_state(data_dir)
        except (OSError, ValueError):
            return
        records = [s["process"] for s in state["services"]]
        records += [state[k]["process"] for k in ("chain", "broker") if state.get(k)]
        for raw in records:
            record = ProcessRecord.from_json(raw)
            if is_ours(record):
                with contextlib.suppress(OSError):
                    os.killpg(record.pid, signal.SIGKILL)


@pytest.fixture
def launched() -> Iterator[Launched]:
    handle = Launched()
    try:
        yield handle
    finally:
        handle.cleanup()


@pytest.fixture
def data_dir(tmp_path: Path, launched: Launched) -> Path:
    path = tmp_path / "prosum-data"
    launched.data_dirs.append(path)
    return path


@needs_anvil
def test_up_foreground_serves_and_stops_on_sigint(launched: Launched, data_dir: Path) -> None:
    ports = _pick_ports()
    up = launched.start("up", "--data-dir", data_dir, *ports.args(), "--timeout", "90")
    assert up.stdout is not None
    output = LineReader(up.stdout)
    assert output.wait_for(READY_LINE, STARTUP_TIMEOUT), output.drain(1)

    state = _read_state(data_dir)
    assert state["up_pid"] == up.pid
    assert [s["name"] for s in state["services"]] == SERVICE_NAMES
    assert [s["port"] for s in state["services"]] == [ports.base + i for i in range(1, 6)]
    chain_url = f"http://127.0.0.1:{ports.chain}"
    assert state["chain"]["rpc_url"] == chain_url
    assert state["chain"]["state_dir"] == str(data_dir.resolve() / "chain")
    assert output.wait_for("Press Ctrl-C", 10.0), output.drain(1)
    assert f"Chain:           {chain_url}" in output.text()
    pids = _child_pids(state)
    assert all(_alive(pid) for pid in pids)
    anvil_pids = _children_of(state["chain"]["pid"])
    assert anvil_pids, "the chain launcher runs no anvil"

    # The chain answers while `up` runs.
    assert _height(chain_url) >= 0

    status = launched.run("status", "--data-dir", data_dir)
    assert status.returncode == 0, status.stdout + status.stderr
    assert "All 5 services are ready" in status.stdout
    assert "chain (anvil)" in status.stdout

    report = json.loads(launched.run("status", "--data-dir", data_dir, "--json").stdout)
    assert report["all_ready"] is True
    assert report["broker"]["alive"] is True
    chain = report["chain"]
    assert chain["alive"] is True
    assert isinstance(chain["height"], int)
    assert chain["seen_by_service"]["service"] == "ledger-adapter"
    assert chain["seen_by_service"]["backend"] == "evm"

    for service in state["services"]:
        response = httpx.get(f"{service['url']}/ready", timeout=5.0)
        assert response.status_code == 200, (service["name"], response.text)
        if service["name"] == "ledger-adapter":
            check = response.json()["checks"]["chain"]
            assert check["ok"] is True, check
            assert check["backend"] == "evm", check
            assert isinstance(check["height"], int), check

    # A running foreground `up` holds the data dir's lock.
    again = launched.run("up", "--data-dir", data_dir, *_pick_ports().args())
    assert again.returncode == 2, again.stdout + again.stderr
    assert "already running" in again.stdout

    up.send_signal(signal.SIGINT)
    assert up.wait(timeout=20) == 0, output.drain()
    text = output.drain()
    assert "Platform stopped" in text, text
    assert not _state_file(data_dir).exists()
    gone = [*pids, *anvil_pids]
    assert _wait_until(lambda: not any(_alive(pid) for pid in gone), 5.0), [
        pid for pid in gone if _alive(pid)
    ]
    assert _port_free(ports.chain), "anvil still holds the chain port"


@needs_anvil
def test_up_detach_then_down(launched: Launched, data_dir: Path) -> None:
    ports = _pick_ports()
    up = launched.run(
        "up", "--data-dir", data_dir, *ports.args(), "--detach", timeout=STARTUP_TIMEOUT
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert READY_LINE in up.stdout
    assert f"http://127.0.0.1:{ports.base + 1}/docs" in up.stdout
    assert f"127.0.0.1:{ports.kafka}" in up.stdout
    assert f"Chain:           http://127.0.0.1:{ports.chain}" in up.stdout

    state = _read_state(data_dir)
    assert state["detached"] is True
    pids = _child_pids(state)
    assert all(_alive(pid) for pid in pids)
    pids += _children_of(state["chain"]["pid"])  # anvil
    assert launched.run("status", "--data-dir", data_dir).returncode == 0

    down = launched.run("down", "--data-dir", data_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "ledger-adapter" in down.stdout
    assert "chain (anvil)" in down.stdout
    assert not _state_file(data_dir).exists()
    assert _wait_until(lambda: not any(_alive(pid) for pid in pids), 5.0), [
        pid for pid in pids if _alive(pid)
    ]
    assert _port_free(ports.chain), "anvil still holds the chain port"

    again = launched.run("down", "--data-dir", data_dir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Nothing running" in again.stdout

    status = launched.run("status", "--data-dir", data_dir)
    assert status.returncode == 1
    assert "Nothing is running" in status.stdout


def test_status_on_empty_data_dir_fails(launched: Launched, data_dir: Path) -> None:
    status = launched.run("status", "--data-dir", data_dir)
    assert status.returncode != 0
    assert "Nothing is running" in status.stdout

    report = json.loads(launched.run("status", "--data-dir", data_dir, "--json").stdout)
    assert report["running"] is False


@needs_anvil
def test_up_restart_keeps_the_chain(launched: Launched, data_dir: Path) -> None:
    ports = _pick_ports()
    first = launched.run(
        "up", "--data-dir", data_dir, *ports.args(), "--detach", timeout=STARTUP_TIMEOUT
    )
    assert first.returncode == 0, first.stdout + first.stderr
    chain_url = f"http://127.0.0.1:{ports.chain}"
    deployed = _height(chain_url)
    # The ledger adapter deploys its contract on its first start.
    assert deployed > 0, "the ledger adapter left the chain empty"
    _rpc(chain_url, "evm_mine")  # one more block, whoever else writes to the chain
    before = _height(chain_url)
    assert before > deployed

    down = launched.run("down", "--data-dir", data_dir)
    assert down.returncode == 0, down.stdout + down.stderr
    assert (data_dir / "chain" / "anvil-state.json").is_file()
    assert _wait_until(lambda: _port_free(ports.chain), 5.0)

    again = launched.run(
        "up", "--data-dir", data_dir, *ports.args(), "--detach", timeout=STARTUP_TIMEOUT
    )
    assert again.returncode == 0, again.stdout + again.stderr
    after = _height(chain_url)
    assert after >= before, f"the chain went back from height {before} to {after}"

    status = launched.run("status", "--data-dir", data_dir, "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    report = json.loads(status.stdout)
    assert report["chain"]["height"] >= before
    assert report["chain"]["seen_by_service"]["backend"] == "evm"


def test_up_reports_a_chain_that_cannot_start(launched: Launched, data_dir: Path) -> None:
    # Needs no anvil: it is the missing anvil that is being reported.
    ports = _pick_ports()
    up = launched.run(
        "up",
        "--data-dir",
        data_dir,
        *ports.args(),
        timeout=STARTUP_TIMEOUT,
        extra_env={"PROSUM_ANVIL_BIN": str(data_dir.parent / "no-such-anvil")},
    )
    assert up.returncode == 1, up.stdout + up.stderr
    assert "chain (anvil) exited with code 1" in up.stdout
    assert "no-such-anvil is not a file" in up.stdout  # the tail of the chain's log
    assert "Platform stopped" in up.stdout
    assert not _state_file(data_dir).exists()
    assert _wait_until(lambda: _port_free(ports.kafka), 5.0), "the broker was left running"
    assert all(_port_free(ports.base + i) for i in range(1, 6)), "a service was started"


def test_up_refuses_a_chain_port_in_use_or_clashing(launched: Launched, data_dir: Path) -> None:
    ports = _pick_ports()
    clash = launched.run(
        "up", "--data-dir", data_dir, *ports.args(), "--chain-port", str(ports.base + 5)
    )
    assert clash.returncode == 2, clash.stdout + clash.stderr
    assert "--chain-port" in clash.stdout

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", ports.chain))
        holder.listen()
        busy = launched.run("up", "--data-dir", data_dir, *ports.args())
    assert busy.returncode == 2, busy.stdout + busy.stderr
    assert f"{ports.chain} (chain)" in busy.stdout
    assert not _state_file(data_dir).exists()


@needs_anvil
def test_up_refuses_a_data_dir_already_running(launched: Launched, data_dir: Path) -> None:
    first = launched.run(
        "up", "--data-dir", data_dir, *_pick_ports().args(), "--detach", timeout=STARTUP_TIMEOUT
    )
    assert first.returncode == 0, first.stdout + first.stderr
    recorded = _state_file(data_dir).read_text()

    second = launched.run("up", "--data-dir", data_dir, *_pick_ports().args(), "--detach")
    assert second.returncode == 2, second.stdout + second.stderr
    assert "already running" in second.stdout
    # The refused attempt must leave the running platform and its record alone.
    assert _state_file(data_dir).read_text() == recorded
    assert all(_alive(pid) for pid in _child_pids(json.loads(recorded)))
    assert launched.run("status", "--data-dir", data_dir).returncode == 0


@needs_anvil
def test_up_reports_a_service_that_cannot_start(launched: Launched, data_dir: Path) -> None:
    # An invalid setting makes every service refuse its configuration and exit at once.
    ports = _pick_ports()
    up = launched.run(
        "up",
        "--data-dir",
        data_dir,
        *ports.args(),
        timeout=STARTUP_TIMEOUT,
        extra_env={"PROSUM_KAFKA_PARTITIONS": "0"},
    )
    assert up.returncode == 1, up.stdout + up.stderr
    assert "exited with code 2" in up.stdout
    assert "configuration refused" in up.stdout  # the tail of the service's log
    assert "Platform stopped" in up.stdout
    assert not _state_file(data_dir).exists()
    assert _wait_until(lambda: _port_free(ports.kafka), 5.0), "the broker was left running"
    assert launched.run("status", "--data-dir", data_dir).returncode == 1
