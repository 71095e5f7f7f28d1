"""``prosum down``: stop whatever the state file says ``prosum up`` started."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .chain import CHAIN_LABEL
from .processes import ProcessRecord, is_ours, signal_process, stop_processes, wait_gone
from .state import StateError, read_state, remove_state, state_path

EXIT_OK = 0
EXIT_FAILED = 1

# `up` itself needs up to 10 s for the services' grace period, a few more to SIGKILL and reap
# them, up to 20 s for the chain and up to 10 s for the broker.
UP_EXIT_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 10.0
# anvil writes its whole state file when it stops; give it time before SIGKILL loses the tail.
CHAIN_STOP_GRACE_SECONDS = 20.0


def run_down(data_dir: Path, console: Console) -> int:
    data_dir = data_dir.expanduser().resolve()
    try:
        state = read_state(data_dir)
    except StateError as exc:
        remove_state(data_dir)
        console.print(
            f"[red]{exc}[/]\nRemoved it; if processes of that run are left, stop them by hand."
        )
        return EXIT_FAILED
    if state is None:
        console.print(f"Nothing running from {data_dir}.")
        return EXIT_OK

    labels: dict[int, str] = {s.process.pid: s.name for s in state.services}
    if state.chain is not None:
        labels[state.chain.process.pid] = CHAIN_LABEL
    if state.broker is not None:
        labels[state.broker.process.pid] = "kafka (tansu)"
    outcome: dict[int, str] = {}
    children = state.children()

    up_alive = state.up.pid != os.getpid() and is_ours(state.up)
    if up_alive:
        # The foreground `up` stops its own children and reaps them; let it do so first.
        running_before = [r for r in children if is_ours(r)]
        signal_process(state.up, signal.SIGTERM, group=False)
        with console.status(f"Asking `prosum up` (pid {state.up.pid}) to stop the platform…"):
            up_left = wait_gone([state.up], UP_EXIT_TIMEOUT_SECONDS)
        for record in running_before:
            if not is_ours(record):
                outcome[record.pid] = "stopped by `prosum up`"
        if up_left:
            console.print(
                f"[yellow]`prosum up` (pid {state.up.pid}) did not exit within "
                f"{UP_EXIT_TIMEOUT_SECONDS:g} s; stopping its processes directly.[/]"
            )

    survivors: list[ProcessRecord] = []
    with console.status("Stopping the platform…"):
        # Services first: they are the clients of the chain and the broker.
        for group, grace in (
            ([s.process for s in state.services], STOP_GRACE_SECONDS),
            ([state.chain.process] if state.chain else [], CHAIN_STOP_GRACE_SECONDS),
            ([state.broker.process] if state.broker else [], STOP_GRACE_SECONDS),
        ):
            result = stop_processes(group, grace=grace)
            for record in result.stopped:
                outcome[record.pid] = "SIGTERM"
            for record in result.killed:
                outcome[record.pid] = "SIGKILL"
            survivors.extend(result.survivors)
        up_how = "SIGTERM"
        if up_alive and is_ours(state.up):
            signal_process(state.up, signal.SIGKILL, group=False)
            wait_gone([state.up], 5.0)
            up_how = "SIGKILL"

    if outcome:
        console.print(f"Stopped the platform in {data_dir}:")
        table = Table()
        table.add_column("process", style="bold")
        table.add_column("pid", justify="right")
        table.add_column("how")
        if up_alive:
            table.add_row("prosum up", str(state.up.pid), up_how)
        for record in children:
            table.add_row(
                labels[record.pid], str(record.pid), outcome.get(record.pid, "was not running")
            )
        console.print(table)
    elif up_alive:
        console.print(f"Stopped `prosum up` (pid {state.up.pid}); nothing else was running.")
    else:
        console.print(f"Nothing was running from {data_dir}; removed its stale state file.")

    if survivors:
        pids = ", ".join(f"{labels.get(r.pid, '?')} (pid {r.pid})" for r in survivors)
        console.print(f"[red]Could not stop {pids}; keeping {state_path(data_dir)}.[/]")
        return EXIT_FAILED
    remove_state(data_dir)
    return EXIT_OK
