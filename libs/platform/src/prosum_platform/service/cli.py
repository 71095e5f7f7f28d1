"""The command line every service shares: ``serve``, ``migrate``, ``downgrade``, ``openapi``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from prosum_platform.service.gc_tuning import freeze_startup_objects, tune_gc
from prosum_platform.service.migrations import downgrade, upgrade
from prosum_platform.service.runtime import ServiceDefinition, build_platform, create_app
from prosum_platform.settings import ServiceSettings


def run_service_cli(definition: ServiceDefinition, argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"prosum-{definition.name}", description=definition.description
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="HTTP API, outbox relay and consumers")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--no-relay", action="store_true", help="do not publish the outbox")
    serve.add_argument("--no-consumers", action="store_true", help="do not consume Kafka")
    migrate = commands.add_parser("migrate", help="upgrade the database schema")
    migrate.add_argument("--revision", default="head")
    down = commands.add_parser("downgrade", help="downgrade the database schema")
    down.add_argument("revision")
    commands.add_parser("openapi", help="print the OpenAPI document")
    args = parser.parse_args(argv)

    try:
        settings = ServiceSettings(definition.name)
    except ValueError as exc:
        print(f"prosum-{definition.name}: configuration refused: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.runtime.log_level.upper(),
        format=f"%(asctime)s {definition.name} %(levelname)s %(name)s: %(message)s",
    )
    settings.runtime.data_dir.mkdir(parents=True, exist_ok=True)
    if args.command == "migrate":
        upgrade(definition.package, settings.database_url, args.revision)
        return 0
    if args.command == "downgrade":
        downgrade(definition.package, settings.database_url, args.revision)
        return 0
    if args.command == "openapi":
        platform = build_platform(definition, settings)
        app = create_app(definition, platform)
        json.dump(app.openapi(), sys.stdout, indent=2)
        return 0

    import uvicorn

    tune_gc()
    if settings.database.migrate_on_start:
        upgrade(definition.package, settings.database_url)
    platform = build_platform(definition, settings)
    app = create_app(
        definition,
        platform,
        run_relay=not args.no_relay,
        run_consumers=not args.no_consumers,
        on_shutdown=[platform.telemetry.shutdown, platform.engine.dispose],
        # What start-up built (modules, settings, statements, clients) lives as long as the
        # process: out of the collector's scans from then on.
        on_started=[freeze_startup_objects],
    )
    port = args.port if args.port is not None else settings.http.port
    config = uvicorn.Config(
        app,
        host=args.host or settings.http.host,
        port=port if port is not None else definition.default_port,
        log_level=settings.runtime.log_level.lower(),
        access_log=False,
        lifespan="on",
    )
    uvicorn.Server(config).run()
    return 0
