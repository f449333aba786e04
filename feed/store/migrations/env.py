"""Alembic environment of the event store, configured in code by `feed.store.store.migration_config`.

`EventStore.upgrade` hands over an open connection in `config.attributes["connection"]`, already inside the
transaction that holds the migration lock, so the migrations commit (or roll back) together with it. Run
through the `alembic` command instead, it connects to `sqlalchemy.url`; `--sql` prints the DDL (offline).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from feed.store.tables import metadata

config = context.config
VERSION_TABLE = config.get_main_option("version_table") or "alembic_version"


def _configure(**kwargs: object) -> None:
    """The options shared by online and offline runs."""
    context.configure(target_metadata=metadata, version_table=VERSION_TABLE, render_as_batch=True, **kwargs)


def run_offline() -> None:
    """Emit the migrations as SQL text for the URL's dialect."""
    _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate over the caller's connection, or over a fresh one to sqlalchemy.url."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = sa.create_engine(config.get_main_option("sqlalchemy.url"), poolclass=sa.pool.NullPool)
    with engine.connect() as connection:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
