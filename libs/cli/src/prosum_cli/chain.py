"""The development chain ``prosum up`` runs: how to start it, reach it and hand it to a service.

The chain is started as a process (``python -m prosum_ledger.entrypoints.devchain``), never
imported, like the services. It runs anvil with its state file in ``<data dir>/chain``, so a
later ``prosum up`` on the same data dir finds the same chain.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

from .services import CHAIN_HOST, CHAIN_MODULE, DEV_CHAIN_ID
from .state import logs_dir

# What a recorded pid's command line must still contain to be taken for the chain launcher.
CHAIN_MARKERS = (CHAIN_MODULE, "--data-dir")
CHAIN_LABEL = "chain (anvil)"


def chain_dir(data_dir: Path) -> Path:
    return data_dir / "chain"


def chain_log(data_dir: Path) -> Path:
    return logs_dir(data_dir) / "chain.log"


def rpc_url(port: int) -> str:
    return f"http://{CHAIN_HOST}:{port}"


def chain_command(data_dir: Path, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        CHAIN_MODULE,
        "--data-dir",
        str(chain_dir(data_dir)),
        "--port",
        str(port),
    ]


def chain_env(port: int) -> dict[str, str]:
    """What the ledger adapter needs to use the chain; in development it makes its own keys."""
    return {
        "PROSUM_CHAIN_BACKEND": "evm",
        "PROSUM_CHAIN_EVM_RPC_URL": rpc_url(port),
        "PROSUM_CHAIN_EVM_CHAIN_ID": str(DEV_CHAIN_ID),
    }


_BLOCK_NUMBER = {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []}


def block_number(url: str, *, timeout: float = 2.0) -> int | None:
    """The chain's height from ``eth_blockNumber``, or None if it does not answer sensibly."""
    try:
        with httpx.Client(timeout=timeout, trust_env=False) as client:
            response = client.post(url, json=_BLOCK_NUMBER)
        answer: Any = response.json()
    except (httpx.HTTPError, ValueError):
        return None
    result = answer.get("result") if isinstance(answer, dict) else None
    if not isinstance(result, str):
        return None
    try:
        return int(result, 16)
    except ValueError:
        return None
