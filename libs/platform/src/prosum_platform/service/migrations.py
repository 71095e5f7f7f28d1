"""Alembic for every service: one history per service, the URL from settings."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import engine_from_config, pool


def alembic_config(package: str, url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", f"{package}:migrations")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(package: str, url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(package, url), revision)


def downgrade(package: str, url: str, revision: str) -> None:
    command.downgrade(alembic_config(package, url), revision)


def run_env(context: Any, service: str) -> None:
    """Body of each service's ``migrations/env.py``."""
    from prosum_platform.eventstore.engine import create_store_engine
    from prosum_platform.settings import ServiceSettings

    url = context.config.get_main_option("sqlalchemy.url") or ServiceSettings(service).database_url
    if context.is_offline_mode():
        context.configure(url=url, literal_binds=True, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    if url.startswith("sqlite"):
        engine = create_store_engine(url)
    else:
        engine = engine_from_config({"sqlalchemy.url": url}, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, render_as_batch=url.startswith("sqlite"))
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
