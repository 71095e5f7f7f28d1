"""`python -m prosum_ledger.entrypoints.devchain --data-dir DIR --port P`: the development chain.

Runs anvil with its state kept in DIR (so a restart keeps the chain) until it gets SIGTERM or
SIGINT. ``prosum up`` starts it; the flags anvil needs (pruned history, state file, gas limit)
live in one place, ``prosum_ledger.adapters.evm.anvil``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from prosum_ledger.adapters.evm.anvil import DEV_CHAIN_ID, AnvilError, start_anvil


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chain-id", type=int, default=DEV_CHAIN_ID)
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        node = start_anvil(args.data_dir, args.port, chain_id=args.chain_id)
    except AnvilError as exc:
        print(f"devchain: {exc}", file=sys.stderr)
        return 1
    print(f"devchain: anvil ready at {node.rpc_url} (chain id {node.chain_id})", flush=True)
    try:
        while not stop.wait(0.5):
            if not node.running():
                print("devchain: anvil exited", file=sys.stderr)
                return 1
    finally:
        node.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
