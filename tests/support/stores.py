"""Databases for tests: a temporary SQLite file, and PostgreSQL where one can be had.

PostgreSQL comes from 127.0.0.1:5432 when it answers (trust auth, as on the development and CI
machines), else from testcontainers when a Docker engine answers, else it is not available and
the PostgreSQL variants of the tests are skipped with that reason.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

LOCAL_PG_ADMIN_URL = os.environ.get(
    "PROSUM_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def _local_postgres_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=0.5):
            pass
    except OSError:
        return False
    try:
        engine = sa.create_engine(LOCAL_PG_ADMIN_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception:
        return False
    return True


def _docker_answers() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


class PostgresServer:
    """A PostgreSQL server on which tests create throwaway databases."""

    def __init__(self, admin_url: str, origin: str) -> None:
        self.admin_url = admin_url
        self.origin = origin
        self._admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")

    @contextmanager
    def database(self) -> Iterator[str]:
        name = f"prosum_test_{uuid.uuid4().hex[:12]}"
        with self._admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = sa.engine.make_url(self.admin_url).set(database=name)
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with self._admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def close(self) -> None:
        self._admin.dispose()


@contextmanager
def postgres_server() -> Iterator[PostgresServer | None]:
    if _local_postgres_answers():
        server = PostgresServer(LOCAL_PG_ADMIN_URL, "127.0.0.1:5432")
        try:
            yield server
        finally:
            server.close()
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="psycopg") as container:
            server = PostgresServer(container.get_connection_url(), "testcontainers")
            try:
                yield server
            finally:
                server.close()
        return
    yield None
