"""Every service's Alembic history: upgrade, downgrade and upgrade again, one revision at a time,
on SQLite and PostgreSQL; and the head schema matches what the code expects."""

from __future__ import annotations

import importlib

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from prosum_platform.eventstore import create_store_engine, metadata
from prosum_platform.service.migrations import alembic_config, downgrade, upgrade

SERVICES = [
    "prosum_identity",
    "prosum_metering",
    "prosum_orderbook",
    "prosum_settlement",
    "prosum_ledger",
]


def _revisions(package: str, url: str) -> list[str]:
    script = ScriptDirectory.from_config(alembic_config(package, url))
    return [r.revision for r in reversed(list(script.walk_revisions("base", "heads")))]


def _current(url: str) -> str | None:
    engine = create_store_engine(url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


@pytest.mark.parametrize("package", SERVICES)
def test_stairway_upgrade_downgrade_upgrade_each_revision(package: str, store_url: str) -> None:
    revisions = _revisions(package, store_url)
    assert revisions, f"{package} has no migrations"
    previous = "base"
    for revision in revisions:
        upgrade(package, store_url, revision)
        assert _current(store_url) == revision
        downgrade(package, store_url, previous)
        assert _current(store_url) == (None if previous == "base" else previous)
        upgrade(package, store_url, revision)
        previous = revision
    downgrade(package, store_url, "base")
    engine = create_store_engine(store_url)
    try:
        leftover = set(sa.inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()
    assert leftover == set(), "downgrade to base leaves no tables behind"


@pytest.mark.parametrize("package", SERVICES)
def test_head_schema_matches_the_code(package: str, store_url: str) -> None:
    upgrade(package, store_url)
    expected = sa.MetaData()
    for table in metadata.tables.values():
        table.to_metadata(expected)
    own = importlib.import_module(f"{package}.bootstrap").DEFINITION.tables
    for table in own.tables.values() if own is not None else ():
        table.to_metadata(expected)
    engine = create_store_engine(store_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), expected)
    finally:
        engine.dispose()
    assert diff == []
