"""The event store, the outbox and consumer tracking, on SQLAlchemy Core.

Everything a command or a consumer does happens inside one ``Transaction``: the domain events it
appends, the integration events it puts in the outbox and the record that it processed an
incoming event either all commit or none do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, overload

import orjson
from sqlalchemy import Connection, Engine, bindparam, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from prosum_contracts import Envelope, SchemaRegistry, TraceContext
from prosum_platform.domain import ConcurrencyConflict
from prosum_platform.eventstore.bulk import BulkStatement
from prosum_platform.eventstore.engine import write_lock
from prosum_platform.eventstore.schema import (
    events,
    leases,
    outbox,
    processed_messages,
    snapshots,
)

TraceProvider = Callable[[], TraceContext]

# Statements built once: SQLAlchemy then reuses their compiled form on every call, which is
# most of the cost of a small transaction.
_CURRENT_VERSION = select(func.max(events.c.version)).where(
    events.c.stream_id == bindparam("stream_id")
)
_INSERT_EVENTS = insert(events).returning(events.c.position)
_INSERT_OUTBOX = insert(outbox)
_UNSENT = (
    "SELECT id, event_id, topic, message_key, payload, headers FROM outbox"
    " WHERE sent_at IS NULL ORDER BY id LIMIT {}"
)
_UNSENT_SQL = {
    "qmark": _UNSENT.format("?"),
    "numeric": _UNSENT.format(":1"),
    "named": _UNSENT.format(":limit"),
    "format": _UNSENT.format("%s"),
    "pyformat": _UNSENT.format("%s"),
}
_OUTBOX_COLUMNS = ("event_id", "topic", "message_key", "payload", "headers", "created_at")
_BULK_OUTBOX = BulkStatement.insert(outbox, _OUTBOX_COLUMNS)
_BULK_EVENTS = BulkStatement.insert(
    events,
    ("stream_id", "version", "event_type", "schema_version", "data", "meta", "recorded_at"),
)
_LOAD_STREAM = (
    select(events)
    .where(events.c.stream_id == bindparam("stream_id"), events.c.version > bindparam("after"))
    .order_by(events.c.version)
)
_TRACK = {
    "postgresql": postgresql.insert(processed_messages)
    .on_conflict_do_nothing()
    .returning(processed_messages.c.event_id),
    "sqlite": sqlite.insert(processed_messages)
    .on_conflict_do_nothing()
    .returning(processed_messages.c.event_id),
}


def _now() -> datetime:
    return datetime.now(UTC)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


@dataclass(frozen=True, slots=True)
class NewEvent:
    event_type: str
    schema_version: int
    data: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    stream_id: str
    version: int
    event_type: str
    schema_version: int
    data: dict[str, Any]
    meta: dict[str, Any]
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Snapshot:
    stream_id: str
    version: int
    state: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    event_id: str
    topic: str
    key: str
    payload: bytes
    headers: list[tuple[str, bytes]]


@overload
def as_utc(moment: datetime) -> datetime: ...


@overload
def as_utc(moment: None) -> None: ...


def as_utc(moment: datetime | None) -> datetime | None:
    """A datetime read back from a store, timezone-aware: SQLite hands back naive datetimes
    (the stores write UTC)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _stored(row: Any) -> StoredEvent:
    recorded_at = as_utc(row.recorded_at)
    return StoredEvent(
        position=row.position,
        stream_id=row.stream_id,
        version=row.version,
        event_type=row.event_type,
        schema_version=row.schema_version,
        data=orjson.loads(row.data),
        meta=orjson.loads(row.meta),
        recorded_at=recorded_at,
    )


def event_rows(batches: Sequence[tuple[str, int, Sequence[NewEvent]]]) -> list[tuple[Any, ...]]:
    """Rows of the events table for events to append after each stream's expected version,
    for ``Transaction.insert_event_rows``."""
    now = _now()
    return [
        (
            stream_id,
            expected + offset,
            event.event_type,
            event.schema_version,
            _dumps(event.data),
            _dumps(event.meta),
            now,
        )
        for stream_id, expected, new_events in batches
        for offset, event in enumerate(new_events, start=1)
    ]


class Transaction:
    """One database transaction of the event store (a unit of work)."""

    def __init__(
        self,
        conn: Connection,
        registry: SchemaRegistry | None,
        trace_provider: TraceProvider | None,
    ) -> None:
        self.conn = conn
        self._registry = registry
        self._trace_provider = trace_provider
        self.enqueued = 0

    # -- event streams -------------------------------------------------------------------
    def current_version(self, stream_id: str) -> int:
        found = self.conn.execute(_CURRENT_VERSION, {"stream_id": stream_id}).scalar()
        return int(found or 0)

    def append(
        self, stream_id: str, expected_version: int, new_events: Sequence[NewEvent]
    ) -> list[StoredEvent]:
        """Append events after ``expected_version``; a different current version is a conflict.

        The unique (stream_id, version) constraint is the last word: of two writers that both
        read version N, only one can store N+1.
        """
        if not new_events:
            return []
        actual = self.current_version(stream_id)
        if actual != expected_version:
            raise ConcurrencyConflict(stream_id, expected_version, actual)
        now = _now()
        rows: list[dict[str, Any]] = [
            {
                "stream_id": stream_id,
                "version": expected_version + offset,
                "event_type": event.event_type,
                "schema_version": event.schema_version,
                "data": _dumps(event.data),
                "meta": _dumps(event.meta),
                "recorded_at": now,
            }
            for offset, event in enumerate(new_events, start=1)
        ]
        try:
            result = self.conn.execute(_INSERT_EVENTS, rows)
            positions = [row[0] for row in result]
        except IntegrityError:
            raise ConcurrencyConflict(stream_id, expected_version, None) from None
        return [
            StoredEvent(
                position=position,
                stream_id=stream_id,
                version=expected_version + offset,
                event_type=event.event_type,
                schema_version=event.schema_version,
                data=event.data,
                meta=event.meta,
                recorded_at=now,
            )
            for offset, (position, event) in enumerate(zip(positions, new_events, strict=True), 1)
        ]

    def append_many(self, batches: Sequence[tuple[str, int, Sequence[NewEvent]]]) -> None:
        """Append to many streams in one statement, each after its expected version.

        For bulk commands whose aggregates were loaded with their versions in this transaction;
        there is no per-stream pre-check, so a concurrent writer surfaces through the unique
        constraint as ``ConcurrencyConflict`` for the whole call.
        """
        self.insert_event_rows(event_rows(batches))

    def insert_event_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Store rows made by ``event_rows`` (perhaps before this transaction began)."""
        if not rows:
            return
        try:
            _BULK_EVENTS.execute(self.conn, rows)
        except IntegrityError:
            raise ConcurrencyConflict(str(rows[0][0]), -1, None) from None

    def load(self, stream_id: str, after_version: int = 0) -> list[StoredEvent]:
        result = self.conn.execute(_LOAD_STREAM, {"stream_id": stream_id, "after": after_version})
        return [_stored(row) for row in result]

    # -- snapshots -------------------------------------------------------------------------
    def latest_snapshot(self, stream_id: str) -> Snapshot | None:
        row = self.conn.execute(select(snapshots).where(snapshots.c.stream_id == stream_id)).first()
        if row is None:
            return None
        return Snapshot(row.stream_id, row.version, orjson.loads(row.state))

    def save_snapshot(self, stream_id: str, version: int, state: dict[str, Any]) -> None:
        values = {"version": version, "state": _dumps(state), "taken_at": _now()}
        updated = self.conn.execute(
            update(snapshots)
            .where(snapshots.c.stream_id == stream_id, snapshots.c.version < version)
            .values(**values)
        )
        if updated.rowcount == 0:
            self._insert_ignoring_conflict(snapshots, {"stream_id": stream_id, **values})

    # -- outbox ----------------------------------------------------------------------------
    def enqueue_many(self, envelopes: Sequence[Envelope]) -> None:
        """Put many integration events in the outbox with one statement (order kept)."""
        self.insert_outbox_rows(self.outbox_rows(envelopes))

    def outbox_rows(self, envelopes: Sequence[Envelope]) -> list[tuple[Any, ...]]:
        """The outbox rows of ``envelopes``, each validated against its schema and serialized,
        without touching the database: ``insert_outbox_rows`` stores them, in this transaction
        or a later one."""
        if not envelopes:
            return []
        # One transaction runs under one span: its trace context is looked up once.
        trace = self._trace_provider() if self._trace_provider is not None else None
        now = _now()
        return [self._outbox_row(envelope, None, trace, now)[1] for envelope in envelopes]

    def insert_outbox_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        if rows:
            _BULK_OUTBOX.execute(self.conn, rows)
            self.enqueued += len(rows)

    def enqueue(self, envelope: Envelope, topic: str | None = None) -> Envelope:
        """Put an integration event in the outbox; the relay publishes it after commit.

        The envelope is validated against its schema here, so an invalid event fails the
        command that made it instead of reaching other services. The current trace context is
        attached when the envelope carries none.
        """
        trace = self._trace_provider() if self._trace_provider is not None else None
        traced, row = self._outbox_row(envelope, topic, trace, _now())
        self.conn.execute(_INSERT_OUTBOX, dict(zip(_OUTBOX_COLUMNS, row, strict=True)))
        self.enqueued += 1
        return traced

    def _outbox_row(
        self, envelope: Envelope, topic: str | None, trace: TraceContext | None, now: datetime
    ) -> tuple[Envelope, tuple[str, str, str, bytes, str, datetime]]:
        """The envelope (with ``trace`` attached when it carries none) and its outbox row, in
        _OUTBOX_COLUMNS order."""
        if envelope.trace.traceparent is None and trace is not None and trace.traceparent:
            envelope = envelope.with_trace(trace)
        document = envelope.to_dict()
        if self._registry is not None:
            self._registry.check(document)
            topic = topic or self._registry.topic_for(envelope.type, envelope.schema_version)
        if topic is None:
            raise ValueError("no topic given and no registry to look one up")
        headers = {
            "event_id": envelope.event_id,
            "event_type": envelope.type,
            "schema_version": str(envelope.schema_version),
            "source": envelope.source,
            **document["trace"],
        }
        return envelope, (
            envelope.event_id,
            topic,
            envelope.subject,
            orjson.dumps(document),
            _dumps(headers),
            now,
        )

    # -- idempotent consumption -----------------------------------------------------------
    def record_processed(self, consumer: str, event_id: str) -> bool:
        """Record that ``consumer`` applied ``event_id``; False if it already had.

        Call it first in the transaction that applies the event: when it returns False the
        caller must do nothing, and a concurrent duplicate waits on the row lock and then
        sees False.
        """
        statement = _TRACK[self.conn.dialect.name]
        values = {"consumer": consumer, "event_id": event_id, "processed_at": _now()}
        return self.conn.execute(statement, values).first() is not None

    def record_processed_many(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        """Record many at once; returns the ids this call recorded (the new ones)."""
        if not event_ids:
            return set()
        now = _now()
        table = processed_messages
        dialect = self.conn.dialect.name
        rows = [{"consumer": consumer, "event_id": e, "processed_at": now} for e in event_ids]
        stmt: Any = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
        stmt = stmt.values(rows).on_conflict_do_nothing().returning(table.c.event_id)
        return {row[0] for row in self.conn.execute(stmt)}

    def was_processed(self, consumer: str, event_id: str) -> bool:
        found = self.conn.execute(
            select(processed_messages.c.event_id).where(
                processed_messages.c.consumer == consumer,
                processed_messages.c.event_id == event_id,
            )
        ).first()
        return found is not None

    def _insert_ignoring_conflict(self, table: Any, values: dict[str, Any]) -> bool:
        dialect = self.conn.dialect.name
        stmt: Any
        if dialect == "postgresql":
            stmt = postgresql.insert(table).values(**values).on_conflict_do_nothing()
        elif dialect == "sqlite":
            stmt = sqlite.insert(table).values(**values).on_conflict_do_nothing()
        else:  # pragma: no cover - only the two supported backends
            raise RuntimeError(f"unsupported database {dialect}")
        # rowcount is not reliable for ON CONFLICT DO NOTHING across drivers; RETURNING is.
        first_key = next(iter(table.primary_key.columns))
        return self.conn.execute(stmt.returning(first_key)).first() is not None


class EventStore:
    """Entry point to one service's store."""

    def __init__(
        self,
        engine: Engine,
        registry: SchemaRegistry | None = None,
        trace_provider: TraceProvider | None = None,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self._trace_provider = trace_provider
        self._outbox_listeners: list[Callable[[], None]] = []

    def on_outbox_commit(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` after a transaction that put events in the outbox commits."""
        self._outbox_listeners.append(listener)

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A connection in a write transaction, committed at the end (rolled back on error)."""
        with write_lock(self.engine), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        with self.writing() as conn:
            tx = Transaction(conn, self.registry, self._trace_provider)
            yield tx
        if tx.enqueued:
            for listener in self._outbox_listeners:
                listener()

    @contextmanager
    def read_transaction(self) -> Iterator[Transaction]:
        """A ``Transaction`` over a read-only connection, to read streams and to prepare rows
        (``outbox_rows``) before taking the write lock. Nothing may be written through it. Its
        reads are one snapshot (SQLite's read transaction; REPEATABLE READ on PostgreSQL)."""
        with self.reading() as conn:
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            yield Transaction(conn, self.registry, self._trace_provider)

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only connection (on SQLite it does not take the write lock)."""
        with self.engine.connect() as conn:
            conn.execution_options(prosum_read_only=True)
            yield conn

    def load(self, stream_id: str, after_version: int = 0) -> list[StoredEvent]:
        with self.reading() as conn:
            return Transaction(conn, None, None).load(stream_id, after_version)

    def read_all(self, after_position: int = 0, limit: int = 1000) -> list[StoredEvent]:
        """Events of all streams in position order: the feed projections are rebuilt from."""
        with self.reading() as conn:
            result = conn.execute(
                select(events)
                .where(events.c.position > after_position)
                .order_by(events.c.position)
                .limit(limit)
            )
            return [_stored(row) for row in result]

    def ping(self) -> None:
        with self.reading() as conn:
            conn.execute(text("SELECT 1"))

    # -- outbox relay side -------------------------------------------------------------------
    def unsent(self, limit: int) -> list[OutboxRow]:
        # The relay reads hundreds of rows a call: plain driver rows, no per-row Row objects.
        with self.reading() as conn:
            sql = _UNSENT_SQL.get(conn.dialect.paramstyle)
            if sql is None:  # a driver of another paramstyle: the same query, through Core
                result: Any = conn.execute(
                    select(
                        outbox.c.id,
                        outbox.c.event_id,
                        outbox.c.topic,
                        outbox.c.message_key,
                        outbox.c.payload,
                        outbox.c.headers,
                    )
                    .where(outbox.c.sent_at.is_(None))
                    .order_by(outbox.c.id)
                    .limit(limit)
                )
            else:
                result = conn.exec_driver_sql(sql, (limit,))
            return [
                OutboxRow(
                    id=row_id,
                    event_id=event_id,
                    topic=topic,
                    key=key,
                    payload=bytes(payload),
                    headers=[(k, str(v).encode()) for k, v in orjson.loads(headers).items()],
                )
                for row_id, event_id, topic, key, payload, headers in result
            ]

    def mark_sent(self, ids: Sequence[int]) -> None:
        if not ids:
            return
        with self.writing() as conn:
            conn.execute(update(outbox).where(outbox.c.id.in_(ids)).values(sent_at=_now()))

    def pending_outbox(self) -> int:
        with self.reading() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
                ).scalar_one()
            )

    def purge_sent(self, older_than: timedelta) -> int:
        cutoff = _now() - older_than
        with self.writing() as conn:
            result = conn.execute(
                outbox.delete().where(outbox.c.sent_at.is_not(None), outbox.c.sent_at < cutoff)
            )
            return int(result.rowcount)

    def acquire_lease(self, name: str, holder: str, ttl: timedelta) -> bool:
        """Take or renew a named lease; True if ``holder`` has it now."""
        now = _now()
        with self.writing() as conn:
            renewed = conn.execute(
                update(leases)
                .where(
                    leases.c.name == name,
                    (leases.c.holder == holder) | (leases.c.expires_at < now),
                )
                .values(holder=holder, expires_at=now + ttl)
            )
            if renewed.rowcount > 0:
                return True
            return Transaction(conn, None, None)._insert_ignoring_conflict(
                leases, {"name": name, "holder": holder, "expires_at": now + ttl}
            )

    def release_lease(self, name: str, holder: str) -> None:
        with self.writing() as conn:
            conn.execute(leases.delete().where(leases.c.name == name, leases.c.holder == holder))
