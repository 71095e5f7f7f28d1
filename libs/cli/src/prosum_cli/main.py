"""The ``prosum`` command: run the embedded platform on this machine (up, status, down)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .services import DEFAULT_BASE_PORT, DEFAULT_CHAIN_PORT, DEFAULT_KAFKA_PORT

app = typer.Typer(
    name="prosum",
    help="Run the prosum peer-to-peer electricity market on this machine.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DataDir = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        "-d",
        envvar="PROSUM_DATA_DIR",
        help="Where databases, logs and the run state live.",
        file_okay=False,
    ),
]
DEFAULT_DATA_DIR = Path(".prosum")


def _console() -> Console:
    # Rich assumes 80 columns when writing to a pipe or file, which cuts URLs short in logs.
    piped = not sys.stdout.isatty() and "COLUMNS" not in os.environ
    return Console(width=160 if piped else None)


@app.command()
def up(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    host: Annotated[str, typer.Option(help="Interface the broker and services listen on.")] = (
        "127.0.0.1"
    ),
    kafka_port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the embedded Kafka broker (tansu).")
    ] = DEFAULT_KAFKA_PORT,
    base_port: Annotated[
        int,
        typer.Option(min=1, max=65530, help="Services listen on base+1 … base+5."),
    ] = DEFAULT_BASE_PORT,
    chain_port: Annotated[
        int,
        typer.Option(min=1, max=65535, help="Port of the development chain (anvil), on 127.0.0.1."),
    ] = DEFAULT_CHAIN_PORT,
    detach: Annotated[
        bool, typer.Option("--detach", help="Return once ready, leaving everything running.")
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(min=1.0, help="Seconds to wait for the chain and every service to be ready."),
    ] = 120.0,
) -> None:
    """Start the Kafka broker, the development chain and the five services; wait until all are
    ready.

    Stays in the foreground and stops everything on Ctrl-C, unless --detach is given.
    """
    from .up import UpOptions, run_up

    options = UpOptions(
        data_dir=data_dir,
        host=host,
        kafka_port=kafka_port,
        base_port=base_port,
        chain_port=chain_port,
        detach=detach,
        timeout=timeout,
    )
    raise typer.Exit(run_up(options, _console()))


@app.command()
def status(
    data_dir: DataDir = DEFAULT_DATA_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON document.")] = False,
) -> None:
    """Show whether the recorded platform is running and ready; exit 0 only if all are ready."""
    from .status import run_status

    raise typer.Exit(run_status(data_dir, _console(), as_json=as_json))


@app.command()
def down(data_dir: DataDir = DEFAULT_DATA_DIR) -> None:
    """Stop everything `prosum up` started from this data dir."""
    from .down import run_down

    raise typer.Exit(run_down(data_dir, _console()))


if __name__ == "__main__":
    app()
