"""The event store: events, catalog and impressions in SQLite or PostgreSQL, migrated by Alembic.

`EventStore(url)` is the one entry point; see `feed.store.store`. Importing this package loads SQLAlchemy and
Alembic but connects to nothing.
"""

from feed.store.store import EventStore, InsertResult, StoreError

__all__ = ["EventStore", "InsertResult", "StoreError"]
