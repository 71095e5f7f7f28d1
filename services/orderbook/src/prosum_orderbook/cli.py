"""`prosum-orderbook`: serve the API with its relay and consumers, or migrate the database."""

from __future__ import annotations

import sys

from prosum_orderbook.bootstrap import DEFINITION
from prosum_platform.service.cli import run_service_cli


def main() -> None:
    sys.exit(run_service_cli(DEFINITION))
