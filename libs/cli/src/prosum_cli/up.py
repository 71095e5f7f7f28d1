"""``prosum up``: start the broker, the development chain and the five services, wait until they
are ready, supervise.

Signals only set a flag (``StopSignals``); every loop here polls it. That way a Ctrl-C never
lands half-way through starting a process, and whatever was started is always stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any, Literal

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from prosum_platform.runtime.tansu import TansuBroker, start_tansu

from .chain import (
    CHAIN_LABEL,
    CHAIN_MARKERS,
    block_number,
    chain_command,
    chain_dir,
    chain_env,
    chain_log,
    rpc_url,
)
from .probe import Probe, probe_all
from .processes import ProcessRecord, identify, log_size, log_tail, stop_processes
from .services import CHAIN_HOST, DEV_CHAIN_ID, SERVICES, ServiceSpec
from .state import (
    BrokerRecord,
    ChainRecord,
    PlatformState,
    ServiceRecord,
    StateError,
    logs_dir,
    read_state,
    remove_state,
    state_path,
    try_lock,
    write_state,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_INTERRUPTED = 130

LOG_TAIL_LINES = 30
STOP_GRACE_SECONDS = 10.0
# anvil writes its whole state file when it stops; give it time before SIGKILL loses the tail.
CHAIN_STOP_GRACE_SECONDS = 20.0
PROBE_TIMEOUT_SECONDS = 2.0
# What a recorded pid's command line must still contain to be taken for ours.
UP_MARKERS = ("prosum",)
BROKER_MARKERS = ("broker", "--listener-url")


def service_markers(spec: ServiceSpec) -> tuple[str, ...]:
    return (spec.package, "serve")


@dataclass(frozen=True)
class UpOptions:
    data_dir: Path
    host: str
    kafka_port: int
    base_port: int
    chain_port: int
    detach: bool
    timeout: float


_Handler = Callable[[int, FrameType | None], Any] | int | None


class StopSignals:
    """SIGINT, SIGTERM and SIGHUP become a flag; a second signal asks to hurry."""

    HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.event = threading.Event()
        self.count = 0
        self.last: str | None = None
        self._previous: dict[signal.Signals, _Handler] = {}

    def install(self) -> None:
        for sig in self.HANDLED:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous.clear()

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.count += 1
        self.last = signal.Signals(signum).name
        self.event.set()

    def requested(self) -> bool:
        return self.event.is_set()

    def pause(self, seconds: float) -> None:
        self.event.wait(seconds)


def connect_host(host: str) -> str:
    """Where a client on this machine reaches a listener bound to ``host``."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # Mirror the servers, which set SO_REUSEADDR: a port in TIME_WAIT is usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class RunningService:
    spec: ServiceSpec
    popen: subprocess.Popen[bytes]
    record: ServiceRecord
    log_path: Path
    log_offset: int
    last_probe: Probe | None = None


@dataclass
class RunningChain:
    popen: subprocess.Popen[bytes]
    record: ChainRecord
    log_path: Path
    log_offset: int
    height: int | None = None


@dataclass(frozen=True)
class Failure:
    what: str
    message: str
    log_path: Path
    log_offset: int


WaitOutcome = Literal["ready", "failed", "interrupted"]


class Supervisor:
    def __init__(self, options: UpOptions, data_dir: Path, console: Console) -> None:
        self.options = options
        self.data_dir = data_dir
        self.console = console
        self.signals = StopSignals()
        self.host = options.host
        self.client_host = connect_host(options.host)
        self.bootstrap = f"{self.client_host}:{options.kafka_port}"
        self.services: list[RunningService] = []
        self.broker: TansuBroker | None = None
        self.broker_log = logs_dir(data_dir) / "tansu.log"
        self.broker_log_offset = 0
        self.chain: RunningChain | None = None
        self.keep_running = False
        self.deadline = 0.0
        self.state = PlatformState(
            data_dir=str(data_dir),
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            up=identify(os.getpid(), UP_MARKERS),
        )

    def run(self) -> int:
        self.signals.install()
        try:
            return self._run()
        finally:
            try:
                if not self.keep_running:
                    self._stop_all()
            finally:
                self.signals.restore()

    def _run(self) -> int:
        # One deadline for the whole start, chain and services alike.
        self.deadline = time.monotonic() + self.options.timeout
        self._save()
        if not self._start_broker():
            return EXIT_FAILED
        if self.signals.requested():
            return self._interrupted()
        chain = self._start_chain()
        if chain == "interrupted":
            return self._interrupted()
        if chain == "failed":
            return EXIT_FAILED
        if not self._start_services():
            return EXIT_FAILED
        if self.signals.requested():
            return self._interrupted()
        outcome, failures = self._wait_ready()
        if outcome == "interrupted":
            return self._interrupted()
        if outcome == "failed":
            for failure in failures:
                self._report(failure)
            return EXIT_FAILED
        self.state.ready = True
        self.state.detached = self.options.detach
        self._save()
        self.console.print(f"[bold green]All {len(self.services)} services are ready.[/]")
        self._print_summary()
        if self.options.detach:
            self.keep_running = True
            self.console.print(
                f"Running in the background. Stop with: prosum down --data-dir {self.data_dir}"
            )
            return EXIT_OK
        self.console.print("Press Ctrl-C to stop.")
        return self._watch()

    def _save(self) -> None:
        write_state(self.data_dir, self.state)

    def _interrupted(self) -> int:
        self.console.print(f"[yellow]Interrupted ({self.signals.last}) while starting.[/]")
        return EXIT_INTERRUPTED

    def _start_broker(self) -> bool:
        host, port = self.host, self.options.kafka_port
        self.broker_log_offset = log_size(self.broker_log)
        with self.console.status(f"Starting the Kafka broker (tansu) on {host}:{port}…"):
            try:
                broker = start_tansu(port, host, log=self.broker_log)
            except Exception as exc:  # a missing binary, a port taken meanwhile, ...
                self._report(
                    Failure(
                        "kafka broker (tansu)",
                        f"did not start: {exc}",
                        self.broker_log,
                        self.broker_log_offset,
                    )
                )
                return False
        self.broker = broker
        self.state.broker = BrokerRecord(
            host=self.client_host,
            port=port,
            log=str(self.broker_log),
            process=identify(broker.process.pid, BROKER_MARKERS),
        )
        self._save()
        self.console.print(f"[green]✓[/] Kafka broker (tansu) listening on {self.bootstrap}")
        return True

    def _start_chain(self) -> WaitOutcome:
        """Start the development chain and wait until it answers ``eth_blockNumber``."""
        port = self.options.chain_port
        log_path = chain_log(self.data_dir)
        state_dir = chain_dir(self.data_dir)
        url = rpc_url(port)
        command = chain_command(self.data_dir, port)
        try:
            with log_path.open("ab") as log:
                stamp = datetime.now(UTC).isoformat(timespec="seconds")
                log.write(f"--- prosum up {stamp}: {' '.join(command)}\n".encode())
                log.flush()
                offset = log.tell()
                popen = subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                    # Its own process group, which anvil (its child) shares: stopping the group
                    # stops both, and a Ctrl-C in the terminal reaches neither directly.
                    start_new_session=True,
                )
        except OSError as exc:
            self._report(
                Failure(CHAIN_LABEL, f"could not be started: {exc}", log_path, log_size(log_path))
            )
            return "failed"
        record = ChainRecord(
            host=CHAIN_HOST,
            port=port,
            chain_id=DEV_CHAIN_ID,
            state_dir=str(state_dir),
            log=str(log_path),
            process=identify(popen.pid, CHAIN_MARKERS),
        )
        self.chain = RunningChain(popen, record, log_path, offset)
        self.state.chain = record
        self._save()
        started = time.monotonic()
        describe = f"Starting the development chain (anvil) at {url}, state in {state_dir}"
        with self.console.status(f"{describe}…") as progress:
            while True:
                if self.signals.requested():
                    return "interrupted"
                if popen.poll() is not None:
                    self._report(
                        Failure(
                            CHAIN_LABEL, f"exited with code {popen.returncode}", log_path, offset
                        )
                    )
                    return "failed"
                height = block_number(url, timeout=PROBE_TIMEOUT_SECONDS)
                if height is not None:
                    self.chain.height = height
                    break
                if time.monotonic() >= self.deadline:
                    self._report(
                        Failure(
                            CHAIN_LABEL,
                            f"did not answer eth_blockNumber at {url} within "
                            f"{self.options.timeout:g} s",
                            log_path,
                            offset,
                        )
                    )
                    return "failed"
                progress.update(
                    f"{describe}… {time.monotonic() - started:.0f} s, waiting for eth_blockNumber"
                )
                self.signals.pause(0.2)
        self.console.print(
            f"[green]✓[/] Development chain (anvil) answering at {url} "
            f"(chain id {DEV_CHAIN_ID}, height {height})"
        )
        return "ready"

    def _service_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PROSUM_DATA_DIR": str(self.data_dir),
            "PROSUM_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "PROSUM_ENVIRONMENT": "development",
            # The log tail shown on failure is only useful if the output got there.
            "PYTHONUNBUFFERED": "1",
        }

    def _start_services(self) -> bool:
        base_env = self._service_env()
        for spec in SERVICES:
            if self.signals.requested():
                return True
            port = spec.port(self.options.base_port)
            log_path = logs_dir(self.data_dir) / f"{spec.name}.log"
            command = [
                sys.executable,
                "-m",
                spec.package,
                "serve",
                "--port",
                str(port),
                "--host",
                self.host,
            ]
            env = {**base_env, "PROSUM_DB_URL": f"sqlite:///{self.data_dir / spec.name}.db"}
            if spec.uses_chain:
                env.update(chain_env(self.options.chain_port))
            try:
                with log_path.open("ab") as log:
                    stamp = datetime.now(UTC).isoformat(timespec="seconds")
                    log.write(f"--- prosum up {stamp}: {' '.join(command)}\n".encode())
                    log.flush()
                    offset = log.tell()
                    popen = subprocess.Popen(
                        command,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        start_new_session=True,
                    )
            except OSError as exc:
                self._report(
                    Failure(spec.name, f"could not be started: {exc}", log_path, log_size(log_path))
                )
                return False
            record = ServiceRecord(
                name=spec.name,
                package=spec.package,
                port=port,
                url=f"http://{url_host(self.client_host)}:{port}",
                log=str(log_path),
                process=identify(popen.pid, service_markers(spec)),
            )
            self.services.append(RunningService(spec, popen, record, log_path, offset))
            self.state.services.append(record)
            self._save()
        return True

    def _dead_children(self) -> list[Failure]:
        failures = [
            Failure(
                s.spec.name,
                f"exited with code {s.popen.returncode}",
                s.log_path,
                s.log_offset,
            )
            for s in self.services
            if s.popen.poll() is not None
        ]
        if self.chain is not None and self.chain.popen.poll() is not None:
            failures.append(
                Failure(
                    CHAIN_LABEL,
                    f"exited with code {self.chain.popen.returncode}",
                    self.chain.log_path,
                    self.chain.log_offset,
                )
            )
        if self.broker is not None and self.broker.process.poll() is not None:
            failures.append(
                Failure(
                    "kafka broker (tansu)",
                    f"exited with code {self.broker.process.returncode}",
                    self.broker_log,
                    self.broker_log_offset,
                )
            )
        return failures

    def _wait_ready(self) -> tuple[WaitOutcome, list[Failure]]:
        deadline = self.deadline
        progress = Progress(
            SpinnerColumn(finished_text="[green]✓[/]"),
            TextColumn("{task.description}"),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        pending = {s.spec.name: s for s in self.services}
        with progress:
            tasks = {
                name: progress.add_task(f"{name:<15}", total=1, status="starting")
                for name in pending
            }
            while pending:
                if self.signals.requested():
                    return "interrupted", []
                dead = self._dead_children()
                if dead:
                    for failure in dead:
                        if failure.what in tasks:
                            progress.update(
                                tasks[failure.what], status=f"[red]{failure.message}[/]"
                            )
                    return "failed", dead
                probes = probe_all(
                    {name: s.record.url for name, s in pending.items()},
                    timeout=PROBE_TIMEOUT_SECONDS,
                )
                for name, probe in probes.items():
                    pending[name].last_probe = probe
                    if probe.ready:
                        progress.update(tasks[name], completed=1, status="[green]ready[/]")
                        del pending[name]
                    else:
                        progress.update(tasks[name], status=f"[dim]{probe.reason}[/]")
                if not pending:
                    break
                if time.monotonic() >= deadline:
                    failures = [
                        Failure(
                            name,
                            f"not ready after {self.options.timeout:g} s (last /ready: "
                            f"{s.last_probe.reason if s.last_probe else 'no answer'})",
                            s.log_path,
                            s.log_offset,
                        )
                        for name, s in pending.items()
                    ]
                    for name in pending:
                        progress.update(tasks[name], status="[red]timed out[/]")
                    return "failed", failures
                self.signals.pause(0.3)
        return "ready", []

    def _print_summary(self) -> None:
        table = Table(title="prosum platform", title_justify="left")
        table.add_column("service", style="bold")
        table.add_column("URL", overflow="fold")
        table.add_column("API docs", overflow="fold")
        table.add_column("pid", justify="right")
        for s in self.services:
            table.add_row(s.spec.name, s.record.url, s.record.docs_url, str(s.popen.pid))
        if self.chain is not None:
            table.add_row(CHAIN_LABEL, self.chain.record.rpc_url, "", str(self.chain.popen.pid))
        self.console.print(table)
        self.console.print(f"Kafka bootstrap: {self.bootstrap}")
        if self.chain is not None:
            self.console.print(
                f"Chain:           {self.chain.record.rpc_url} (chain id {DEV_CHAIN_ID})"
            )
            self.console.print(f"Chain state:     {self.chain.record.state_dir}")
        self.console.print(f"Data dir:        {self.data_dir}")
        self.console.print(f"Logs:            {logs_dir(self.data_dir)}")

    def _watch(self) -> int:
        while not self.signals.requested():
            dead = self._dead_children()
            if dead:
                for failure in dead:
                    self._report(failure)
                return EXIT_FAILED
            self.signals.pause(0.5)
        self.console.print(f"Received {self.signals.last}; stopping the platform…")
        return EXIT_OK

    def _report(self, failure: Failure) -> None:
        self.console.print(f"[bold red]✗ {failure.what} {failure.message}[/]")
        tail = log_tail(failure.log_path, offset=failure.log_offset, lines=LOG_TAIL_LINES)
        if not tail:
            self.console.print(f"  (nothing in {failure.log_path})")
            return
        self.console.print(f"  last {len(tail)} lines of {failure.log_path}:", style="dim")
        for line in tail:
            self.console.print(f"  | {line}", markup=False, highlight=False, soft_wrap=True)

    def _stop_all(self) -> None:
        signals_before = self.signals.count
        survivors: list[ProcessRecord] = []
        with self.console.status("Stopping the platform…"):
            if self.services:
                result = stop_processes(
                    [s.record.process for s in self.services],
                    grace=STOP_GRACE_SECONDS,
                    should_hurry=lambda: self.signals.count > signals_before,
                )
                survivors = result.survivors
                names = {s.record.process.pid: s.spec.name for s in self.services}
                for record in result.killed:
                    self.console.print(
                        f"[yellow]{names[record.pid]} (pid {record.pid}) outlived SIGTERM; killed[/]"
                    )
                for s in self.services:
                    # Reap our children so that none lingers as a zombie.
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        s.popen.wait(timeout=1.0)
            if self.chain is not None:
                # After the services (the ledger adapter is its client), before the broker.
                chain = self.chain
                result = stop_processes(
                    [chain.record.process],
                    grace=CHAIN_STOP_GRACE_SECONDS,
                    should_hurry=lambda: self.signals.count > signals_before,
                )
                survivors.extend(result.survivors)
                if result.killed:
                    self.console.print(
                        f"[yellow]{CHAIN_LABEL} (pid {chain.popen.pid}) outlived SIGTERM; "
                        "killed (its last seconds of state may be lost)[/]"
                    )
                with contextlib.suppress(subprocess.TimeoutExpired):
                    chain.popen.wait(timeout=1.0)
            if self.broker is not None:
                self.broker.stop()
        if survivors:
            self.console.print(
                "[red]Some processes could not be stopped: "
                f"{', '.join(str(r.pid) for r in survivors)}; keeping {state_path(self.data_dir)}[/]"
            )
            return
        remove_state(self.data_dir)
        self.console.print("Platform stopped.")


def run_up(options: UpOptions, console: Console) -> int:
    data_dir = options.data_dir.expanduser().resolve()
    ports = {spec.name: spec.port(options.base_port) for spec in SERVICES}
    service_range = f"{min(ports.values())}-{max(ports.values())}"
    if options.kafka_port in ports.values():
        console.print(
            f"[red]--kafka-port {options.kafka_port} collides with a service port "
            f"({service_range}).[/]"
        )
        return EXIT_REFUSED
    if options.chain_port in ports.values() or options.chain_port == options.kafka_port:
        console.print(
            f"[red]--chain-port {options.chain_port} collides with the Kafka port "
            f"({options.kafka_port}) or a service port ({service_range}).[/]"
        )
        return EXIT_REFUSED
    try:
        logs_dir(data_dir).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        console.print(f"[red]Cannot create the data dir {data_dir}: {exc}[/]")
        return EXIT_REFUSED
    lock = try_lock(data_dir)
    if lock is None:
        console.print(
            f"[red]Another `prosum up` is already running for {data_dir}.[/] "
            "See `prosum status`, or stop it with `prosum down`."
        )
        return EXIT_REFUSED
    with lock:
        try:
            existing = read_state(data_dir)
        except StateError as exc:
            console.print(f"[red]{exc}[/]\nRun `prosum down --data-dir {data_dir}` to clear it.")
            return EXIT_REFUSED
        if existing is not None:
            live = existing.live_processes()
            if live:
                pids = ", ".join(str(r.pid) for r in live)
                console.print(
                    f"[red]A prosum platform is already running from {data_dir} "
                    f"(pids {pids}).[/] See `prosum status`, or stop it with `prosum down`."
                )
                return EXIT_REFUSED
            remove_state(data_dir)
            console.print("[dim]Removed the state file of an earlier run that is gone.[/]")
        busy = [
            f"{port} ({name})"
            for name, port in [("kafka", options.kafka_port), *ports.items()]
            if not port_free(options.host, port)
        ]
        if not port_free(CHAIN_HOST, options.chain_port):
            # The chain listens on the loopback interface whatever --host says.
            busy.append(f"{CHAIN_HOST}:{options.chain_port} (chain)")
        if busy:
            console.print(
                f"[red]Port(s) already in use on {options.host}: {', '.join(busy)}.[/] "
                "Choose others with --base-port / --kafka-port / --chain-port."
            )
            return EXIT_REFUSED
        return Supervisor(options, data_dir, console).run()
