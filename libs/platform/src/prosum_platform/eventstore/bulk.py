"""Many rows in one statement, without SQLAlchemy's per-row parameter handling.

``connection.execute(insert(table), rows)`` builds, for each row, a parameter set through the
compiled statement and each column type's bind processor. For the hot bulk paths (thousands of
readings, intervals and outbox rows a second) that work cost more than the database's own: here
the statement is compiled once per dialect, the rows are plain tuples in the order of
``columns``, only the columns whose type needs a bind processor on that dialect (SQLite's
``DateTime``) get one, and the driver's ``executemany`` receives the result directly through
``exec_driver_sql``, still on the caller's connection and transaction.

The statement text comes from SQLAlchemy (quoting, dialect, the table's real names), so this is
the same SQL ``execute`` would send.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import itemgetter
from typing import Any

from sqlalchemy import Connection, Table, bindparam, insert, update

_UNSET = object()


class _Compiled:
    def __init__(self, sql: str, order: list[int] | None, names: list[str] | None) -> None:
        self.sql = sql
        self.order = order
        """For a positional paramstyle: the index in a row of each placeholder in turn."""
        self.names = names
        """For a named paramstyle: the parameter name of each value of a row."""


_Prepared = tuple[_Compiled, list[tuple[int, Callable[[Any], Any]]]]


class BulkStatement:
    """One INSERT or UPDATE for many rows given as tuples in ``columns`` order."""

    def __init__(self, statement: Any, table: Table, params: Sequence[tuple[str, str]]) -> None:
        """``params``: (bind parameter, table column) for each value of a row, in order."""
        self._statement = statement
        self._table = table
        self._params = [name for name, _ in params]
        self._columns = [column for _, column in params]
        # One entry per dialect and driver: the statement and its bind processors together,
        # so a thread never sees one without the other.
        self._prepared: dict[tuple[str, str], _Prepared] = {}

    @classmethod
    def insert(cls, table: Table, columns: Sequence[str] | None = None) -> BulkStatement:
        names = list(columns) if columns is not None else [c.name for c in table.columns]
        _refuse_python_defaults(table, names, "default")
        statement = insert(table).values({name: bindparam(name) for name in names})
        return cls(statement, table, [(name, name) for name in names])

    @classmethod
    def update(cls, table: Table, key: Sequence[str], values: Sequence[str]) -> BulkStatement:
        """UPDATE ``table`` SET ``values`` WHERE each ``key`` column equals its value; a row
        is (values..., keys...)."""
        _refuse_python_defaults(table, [*key, *values], "onupdate")
        statement = (
            update(table)
            .where(*(table.c[k] == bindparam(f"k_{k}") for k in key))
            .values({v: bindparam(f"v_{v}") for v in values})
        )
        params = [*((f"v_{v}", v) for v in values), *((f"k_{k}", k) for k in key)]
        return cls(statement, table, params)

    def _prepare(self, conn: Connection) -> _Prepared:
        dialect = conn.dialect
        key = (dialect.name, dialect.driver)
        prepared = self._prepared.get(key)
        if prepared is None:
            done = self._statement.compile(dialect=dialect)
            index = {name: i for i, name in enumerate(self._params)}
            if done.positional:
                order = [index[name] for name in done.positiontup or ()]
                compiled = _Compiled(done.string, order, None)
            else:
                compiled = _Compiled(done.string, None, list(self._params))
            processors: list[tuple[int, Callable[[Any], Any]]] = []
            for i, column in enumerate(self._columns):
                processor = self._table.c[column].type._cached_bind_processor(dialect)
                if processor is not None:
                    processors.append((i, processor))
            prepared = self._prepared[key] = (compiled, processors)
        return prepared

    def execute(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> int:
        """Run for ``rows`` on ``conn`` (in its transaction); the number of rows matched."""
        if not rows:
            return 0
        compiled, processors = self._prepare(conn)
        if processors:
            # Rows of one call mostly share their timestamps: each distinct value is converted
            # once.
            memo: list[tuple[Any, Any]] = [(_UNSET, None)] * len(processors)
            converted: list[Any] = []
            for row in rows:
                values = list(row)
                for n, (i, processor) in enumerate(processors):
                    value = values[i]
                    seen, out = memo[n]
                    if value is not seen:
                        out = processor(value)
                        memo[n] = (value, out)
                    values[i] = out
                converted.append(values)
            rows = converted
        if compiled.order is not None:
            order = compiled.order
            if order != list(range(len(self._params))):
                pick = itemgetter(*order) if len(order) > 1 else lambda row: (row[order[0]],)
                parameters: Any = [pick(row) for row in rows]
            else:
                parameters = [tuple(row) for row in rows]
        else:
            names = compiled.names or []
            parameters = [dict(zip(names, row, strict=True)) for row in rows]
        result = conn.exec_driver_sql(compiled.sql, parameters)
        return int(result.rowcount)


def _refuse_python_defaults(table: Table, given: Sequence[str], kind: str) -> None:
    """SQLAlchemy fills a column's Python-side default as one more parameter, which rows of
    plain tuples cannot carry: such a column must be given."""
    missing = [
        c.name for c in table.columns if c.name not in given and getattr(c, kind) is not None
    ]
    if missing:
        raise ValueError(
            f"{table.name}: give {', '.join(missing)} in the rows (Python-side {kind}s)"
        )
