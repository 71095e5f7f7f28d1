"""Database engines for the event store: PostgreSQL in production, SQLite embedded.

SQLite runs in WAL mode and every transaction starts with ``BEGIN IMMEDIATE``, so two writers
queue for the write lock instead of failing halfway with "database is locked". Writers of one
process also queue on a lock of the engine's own (``write_lock``) before asking SQLite: SQLite's
busy handler polls with growing sleeps, so a thread waiting inside it wakes up to tens of
milliseconds after the lock is free, where a thread waiting on a Python lock wakes at once.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def create_store_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            parsed,
            echo=echo,
            connect_args={"timeout": 30, "check_same_thread": False, "isolation_level": None},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        _configure_sqlite(engine)
        _WRITE_LOCKS[engine] = threading.Lock()
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return create_engine(
        parsed, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
    )


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # 16 MiB of page cache a connection (SQLite's default is 2): the read models of a busy
        # service stay in memory; a pool of 20 connections stays under about 320 MiB.
        cursor.execute("PRAGMA cache_size=-16384")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        if connection.get_execution_options().get("prosum_read_only"):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


WRITE_LOCK_TIMEOUT_S = 30.0
_WRITE_LOCKS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()


class WriteLockTimeout(TimeoutError):
    """Another transaction of this process held the SQLite write lock for too long."""


@contextmanager
def write_lock(engine: Engine) -> Iterator[None]:
    """Hold this process's turn to write to ``engine`` (SQLite); nothing for a server database,
    whose row locks let writers run side by side."""
    lock = _WRITE_LOCKS.get(engine)
    if lock is None:
        yield
        return
    if not lock.acquire(timeout=WRITE_LOCK_TIMEOUT_S):
        raise WriteLockTimeout(
            f"waited {WRITE_LOCK_TIMEOUT_S:.0f} s for another transaction of this process to "
            "finish writing to the SQLite database"
        )
    try:
        yield
    finally:
        lock.release()
