"""``BulkStatement`` writes exactly what ``connection.execute`` writes, on SQLite and PostgreSQL:
same values read back (timestamps, bytes, NULLs, integers beyond 32 bits), same transaction,
unique violations surfacing as ``IntegrityError``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from prosum_platform.eventstore import create_store_engine
from prosum_platform.eventstore.bulk import BulkStatement

meta = MetaData()
things = Table(
    "bulk_things",
    meta,
    Column("key", String(64), primary_key=True),
    Column("amount", BigInteger, nullable=False),
    Column("blob", LargeBinary, nullable=True),
    Column("note", String(100), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False, default=1),
)
AT = datetime(2026, 11, 21, 12, 30, 15, 123456, tzinfo=UTC)


def _rows(prefix: str, n: int) -> list[tuple[object, ...]]:
    return [
        (
            f"{prefix}{i}",
            10**15 + i,
            bytes([i % 256]) * 3 if i % 2 else None,
            None if i % 3 else f"note {i} with 'quotes' and %s",
            AT + timedelta(seconds=i),
            i,
        )
        for i in range(n)
    ]


COLUMNS = ("key", "amount", "blob", "note", "at", "version")


def test_bulk_insert_reads_back_the_same_as_an_ordinary_insert(store_url: str) -> None:
    engine = create_store_engine(store_url)
    meta.create_all(engine)
    try:
        bulk = BulkStatement.insert(things, COLUMNS)
        with engine.begin() as conn:
            conn.execute(
                insert(things), [dict(zip(COLUMNS, row, strict=True)) for row in _rows("a", 50)]
            )
            assert bulk.execute(conn, _rows("b", 50)) == 50
            assert bulk.execute(conn, []) == 0
        with engine.connect() as conn:
            stored = {row.key: row for row in conn.execute(select(things))}
        assert len(stored) == 100
        for i in range(50):
            a, b = stored[f"a{i}"], stored[f"b{i}"]
            assert (b.amount, b.blob, b.note, b.version) == (a.amount, a.blob, a.note, i)
            assert b.at == a.at
            assert b.at.replace(tzinfo=UTC) == AT + timedelta(seconds=i)
    finally:
        meta.drop_all(engine)
        engine.dispose()


def test_bulk_update_by_key_and_a_duplicate_key_rolls_back(store_url: str) -> None:
    engine = create_store_engine(store_url)
    meta.create_all(engine)
    try:
        with engine.begin() as conn:
            BulkStatement.insert(things, COLUMNS).execute(conn, _rows("k", 10))
        update = BulkStatement.update(things, ["key"], ["amount", "note"])
        with engine.begin() as conn:
            matched = update.execute(conn, [(7, "seven", "k7"), (8, None, "k8"), (9, "x", "nope")])
        with engine.connect() as conn:
            by_key = {row.key: row for row in conn.execute(select(things))}
        assert (by_key["k7"].amount, by_key["k7"].note) == (7, "seven")
        assert (by_key["k8"].amount, by_key["k8"].note) == (8, None)
        assert by_key["k1"].amount == 10**15 + 1
        assert matched in (2, -1)  # drivers that cannot count an executemany say -1

        with pytest.raises(IntegrityError), engine.begin() as conn:
            BulkStatement.insert(things, COLUMNS).execute(conn, _rows("new", 3))
            BulkStatement.insert(things, COLUMNS).execute(conn, _rows("k", 1))
        with engine.connect() as conn:
            keys = {row.key for row in conn.execute(select(things.c.key))}
        assert not any(k.startswith("new") for k in keys), "the transaction was half applied"
    finally:
        meta.drop_all(engine)
        engine.dispose()


def test_a_column_with_a_python_side_default_must_be_given() -> None:
    with pytest.raises(ValueError, match="version"):
        BulkStatement.insert(things, COLUMNS[:-1])
