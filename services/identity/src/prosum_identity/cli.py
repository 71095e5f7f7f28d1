"""`prosum-identity`: serve the API with its relay and consumers, migrate the database, or
rebuild the read models from the event store.

Identity's own settings are checked before anything starts, so a refused secret stops
``serve`` with a one-line reason (exit 2) instead of a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from prosum_identity.adapters.projections import rebuild_read_models
from prosum_identity.adapters.settings import IdentitySettings, resolve_secrets
from prosum_identity.adapters.store import CODEC
from prosum_identity.bootstrap import DEFINITION
from prosum_platform.eventstore import EventStore, create_store_engine
from prosum_platform.service.cli import run_service_cli
from prosum_platform.settings import ServiceSettings

REBUILD = "rebuild-read-models"


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [REBUILD]:
        sys.exit(_rebuild())
    if args[:1] == ["serve"]:
        problem = _configuration_problem()
        if problem is not None:
            print(f"prosum-identity: configuration refused: {problem}", file=sys.stderr)
            sys.exit(2)
    sys.exit(run_service_cli(DEFINITION, args))


def _configuration_problem() -> str | None:
    try:
        platform = ServiceSettings(DEFINITION.name)
        platform.runtime.data_dir.mkdir(parents=True, exist_ok=True)
        resolve_secrets(IdentitySettings(), platform.runtime.environment, platform.runtime.data_dir)
    except ValueError as exc:
        return str(exc)
    return None


def _rebuild() -> int:
    """Replay every event into fresh read models, in one transaction."""
    settings = ServiceSettings(DEFINITION.name)
    engine = create_store_engine(settings.database_url)
    try:
        with EventStore(engine).transaction() as tx:
            replayed = rebuild_read_models(tx.conn, CODEC)
    finally:
        engine.dispose()
    print(f"prosum-identity: read models rebuilt from {replayed} events")
    return 0
