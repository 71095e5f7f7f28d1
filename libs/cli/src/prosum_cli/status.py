"""``prosum status``: what the state file says is running, and whether it is ready."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from prosum_platform.runtime.tansu import wait_for_port

from .chain import CHAIN_LABEL, block_number
from .probe import Probe, describe_chain_check, probe_all
from .processes import is_ours
from .services import SERVICES
from .state import PlatformState, StateError, read_state

EXIT_ALL_READY = 0
EXIT_NOT_READY = 1


def _service_rows(state: PlatformState) -> list[dict[str, Any]]:
    probes = probe_all({s.name: s.url for s in state.services}, timeout=2.0)
    recorded = {s.name: s for s in state.services}
    rows: list[dict[str, Any]] = []
    for spec in SERVICES:
        record = recorded.get(spec.name)
        if record is None:
            rows.append(
                {"name": spec.name, "started": False, "ready": False, "reason": "not started"}
            )
            continue
        probe = probes.get(spec.name, Probe(False, None, "not probed"))
        body = probe.body or {}
        row: dict[str, Any] = {
            "name": spec.name,
            "started": True,
            "pid": record.process.pid,
            "alive": is_ours(record.process),
            "url": record.url,
            "docs_url": record.docs_url,
            "ready": probe.ready,
            "status_code": probe.status_code,
            "reason": probe.reason,
            "chain": probe.chain,
            "checks": body.get("checks"),
            "log": record.log,
        }
        if spec.uses_chain:
            row["chain_check"] = probe.chain_check
        rows.append(row)
    return rows


def _chain_report(state: PlatformState, services: list[dict[str, Any]]) -> dict[str, Any] | None:
    if state.chain is None:
        return None
    chain = state.chain
    alive = is_ours(chain.process)
    height = block_number(chain.rpc_url, timeout=2.0) if alive else None
    # What the chain's client, the ledger adapter, reports about it in its /ready.
    seen: dict[str, Any] | None = None
    for row in services:
        check = row.get("chain_check")
        if isinstance(check, dict):
            seen = {
                "service": row["name"],
                "ok": check.get("ok"),
                "backend": check.get("backend"),
                "height": check.get("height"),
                "summary": describe_chain_check(check),
            }
    return {
        "rpc_url": chain.rpc_url,
        "chain_id": chain.chain_id,
        "pid": chain.process.pid,
        "alive": alive,
        "answering": height is not None,
        "height": height,
        "state_dir": chain.state_dir,
        "log": chain.log,
        "seen_by_service": seen,
    }


def _report(state: PlatformState) -> dict[str, Any]:
    broker: dict[str, Any] | None = None
    if state.broker is not None:
        broker = {
            "bootstrap": state.broker.bootstrap,
            "pid": state.broker.process.pid,
            "alive": is_ours(state.broker.process),
            "listening": wait_for_port(state.broker.host, state.broker.port, 0.5),
        }
    services = _service_rows(state)
    chain = _chain_report(state, services)
    return {
        "running": True,
        "data_dir": state.data_dir,
        "started_at": state.started_at,
        "detached": state.detached,
        "startup_complete": state.ready,
        "up": {"pid": state.up.pid, "alive": is_ours(state.up)},
        "broker": broker,
        "chain": chain,
        "services": services,
        "all_ready": all(s["ready"] for s in services),
    }


def _yes_no(value: bool) -> str:
    return "[green]yes[/]" if value else "[red]no[/]"


def _print(report: dict[str, Any], console: Console) -> None:
    up = report["up"]
    if up["alive"] and not report["startup_complete"]:
        owner = f"still starting (`prosum up` pid {up['pid']})"
    elif up["alive"]:
        owner = f"supervised by `prosum up` (pid {up['pid']})"
    elif report["detached"]:
        owner = "detached"
    else:
        owner = f"[yellow]its `prosum up` (pid {up['pid']}) is gone[/]"
    console.print(
        f"prosum platform in {report['data_dir']}, started {report['started_at']}, {owner}"
    )
    table = Table()
    table.add_column("service", style="bold")
    table.add_column("pid", justify="right")
    table.add_column("alive")
    table.add_column("ready")
    table.add_column("detail")
    table.add_column("URL", overflow="fold")
    broker = report["broker"]
    if broker is not None:
        table.add_row(
            "kafka (tansu)",
            str(broker["pid"]),
            _yes_no(broker["alive"]),
            _yes_no(broker["listening"]),
            "" if broker["listening"] else "not listening",
            broker["bootstrap"],
        )
    else:
        table.add_row("kafka (tansu)", "-", _yes_no(False), _yes_no(False), "not started", "")
    chain = report["chain"]
    if chain is not None:
        details = [f"height {chain['height']}" if chain["answering"] else "not answering"]
        seen = chain["seen_by_service"]
        if seen is not None:
            details.append(f"{seen['service']} sees: {seen['summary']}")
        table.add_row(
            CHAIN_LABEL,
            str(chain["pid"]),
            _yes_no(chain["alive"]),
            _yes_no(chain["answering"]),
            "; ".join(details),
            chain["rpc_url"],
        )
    else:
        table.add_row(CHAIN_LABEL, "-", _yes_no(False), _yes_no(False), "not started", "")
    for row in report["services"]:
        if not row["started"]:
            table.add_row(row["name"], "-", _yes_no(False), _yes_no(False), row["reason"], "")
            continue
        details = [] if row["ready"] else [row["reason"]]
        if row["chain"] is not None:
            details.append(f"chain: {row['chain']}")
        table.add_row(
            row["name"],
            str(row["pid"]),
            _yes_no(row["alive"]),
            _yes_no(row["ready"]),
            "; ".join(details),
            row["url"],
        )
    console.print(table)
    if chain is not None:
        console.print(f"Chain state: {chain['state_dir']}")
    ready = sum(1 for row in report["services"] if row["ready"])
    if report["all_ready"]:
        console.print(f"[bold green]All {ready} services are ready.[/]")
    else:
        console.print(f"[bold red]{ready} of {len(report['services'])} services are ready.[/]")


def run_status(data_dir: Path, console: Console, *, as_json: bool) -> int:
    data_dir = data_dir.expanduser().resolve()
    try:
        state = read_state(data_dir)
    except StateError as exc:
        if as_json:
            _dump({"running": False, "data_dir": str(data_dir), "error": str(exc)})
        else:
            console.print(f"[red]{exc}[/]")
        return EXIT_NOT_READY
    if state is None:
        if as_json:
            _dump({"running": False, "data_dir": str(data_dir)})
        else:
            console.print(f"Nothing is running from {data_dir} (no state file).")
        return EXIT_NOT_READY
    report = _report(state)
    if as_json:
        _dump(report)
    else:
        _print(report, console)
    return EXIT_ALL_READY if report["all_ready"] else EXIT_NOT_READY


def _dump(data: dict[str, Any]) -> None:
    # Plain stdout rather than rich: scripts parse this, so no wrapping or highlighting.
    sys.stdout.write(json.dumps(data, indent=2) + "\n")
    sys.stdout.flush()
