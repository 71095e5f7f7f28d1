"""Starting and stopping a local anvil dev chain whose state lives in a data folder.

The binary from npm ``@foundry-rs/anvil-linux-amd64`` is started directly (not through an npm
or npx wrapper) so the process we hold is anvil itself and terminating it stops the chain.
Flags that matter, as measured on the development machine:

- ``--prune-history 64``: without it anvil writes about 650 KB per block under ``~/.foundry``
  and slows fourfold. Receipts and logs stay queryable; only historical *state* (eth_call at an
  old block) goes, beyond the last 64 blocks kept in memory.
- ``--state FILE --state-interval N``: loads the chain from FILE at start and dumps it every N
  seconds and on exit, so a restart (even after ``kill -9``, losing at most N seconds) keeps it.
- ``--gas-limit``: a 500-trade settlement batch needs about 16M gas; the block limit is set far
  above that so a batch never waits for room.
- ``--base-fee 0 --gas-price 0 --disable-min-priority-fee``: gas is free, as on a permissioned
  chain, so the operator account needs no funding.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

ANVIL_PACKAGE_BIN = Path("node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil")
DEV_CHAIN_ID = 31337
DEV_GAS_LIMIT = 1_000_000_000
# States anvil keeps in memory under --prune-history. With none kept, an eth_call at "latest"
# racing a new block fails ("block height is N but requested was N-1"); a few also let a failed
# transaction be replayed on the state before its block to read its revert reason.
KEPT_STATES = 64
STATE_FILE = "anvil-state.json"
LOG_FILE = "anvil.log"


class AnvilError(RuntimeError):
    """anvil could not be found or did not come up."""


def find_anvil(start: Path | None = None) -> Path:
    """The anvil binary: ``$PROSUM_ANVIL_BIN``, else ``node_modules`` in the nearest folder
    above ``start`` (default: the working directory) or above this file."""
    override = os.environ.get("PROSUM_ANVIL_BIN")
    if override:
        if not Path(override).is_file():
            raise AnvilError(f"PROSUM_ANVIL_BIN={override} is not a file")
        return Path(override)
    roots = [(start or Path.cwd()).resolve(), Path(__file__).resolve()]
    for root in roots:
        for folder in (root, *root.parents):
            candidate = folder / ANVIL_PACKAGE_BIN
            if candidate.is_file():
                return candidate
    raise AnvilError(
        f"anvil not found ({ANVIL_PACKAGE_BIN} above {roots[0]}); run `npm install` in the "
        "repository root or set PROSUM_ANVIL_BIN"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _block_number(url: str, timeout: float) -> int | None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []})
    # The URL is always our own loopback address, built in start_anvil.
    request = urllib.request.Request(  # noqa: S310
        url, data=body.encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            answer = json.loads(response.read())
    except (OSError, ValueError):
        return None
    result = answer.get("result") if isinstance(answer, dict) else None
    return int(result, 16) if isinstance(result, str) else None


@dataclass
class AnvilNode:
    """A running anvil; ``stop()`` ends it (state is dumped on the way out)."""

    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    chain_id: int
    rpc_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.rpc_url = f"http://127.0.0.1:{self.port}"

    @property
    def state_file(self) -> Path:
        return self.data_dir / STATE_FILE

    @property
    def log_file(self) -> Path:
        return self.data_dir / LOG_FILE

    def running(self) -> bool:
        return self.process.poll() is None

    def height(self) -> int | None:
        return _block_number(self.rpc_url, timeout=2.0)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, so anvil dumps its state; SIGKILL only if it does not exit in time."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, for tests that the state file survives one."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> AnvilNode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_anvil(
    data_dir: Path,
    port: int | None = None,
    *,
    chain_id: int = DEV_CHAIN_ID,
    gas_limit: int = DEV_GAS_LIMIT,
    state_interval_s: int = 2,
    binary: Path | None = None,
    ready_timeout_s: float = 30.0,
) -> AnvilNode:
    """Start anvil with its state file and log in ``data_dir``; return once it answers RPC."""
    data_dir.mkdir(parents=True, exist_ok=True)
    exe = binary or find_anvil()
    port = port or free_port()
    args = [
        str(exe),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--chain-id",
        str(chain_id),
        "--gas-limit",
        str(gas_limit),
        "--base-fee",
        "0",
        "--gas-price",
        "0",
        "--disable-min-priority-fee",
        "--prune-history",
        str(KEPT_STATES),
        "--state",
        str(data_dir / STATE_FILE),
        "--state-interval",
        str(state_interval_s),
        # Per-request log lines cost time at hundreds of transactions per second.
        "--quiet",
    ]
    with (data_dir / LOG_FILE).open("ab") as log_handle:
        process = subprocess.Popen(
            args, stdout=log_handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    node = AnvilNode(process=process, port=port, data_dir=data_dir, chain_id=chain_id)
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AnvilError(
                f"anvil exited with code {process.returncode} before answering; "
                f"see {node.log_file}: {_tail(node.log_file)}"
            )
        if node.height() is not None:
            return node
        time.sleep(0.05)
    node.stop()
    raise AnvilError(f"anvil did not answer on {node.rpc_url} within {ready_timeout_s} s")


def _tail(path: Path, size: int = 2000) -> str:
    with contextlib.suppress(OSError):
        return path.read_text(errors="replace")[-size:]
    return ""
