"""Dialect adapters: everything that differs between databases lives behind one interface."""
from __future__ import annotations

from sqlalchemy import Engine

from shared.dialects.base import DialectAdapter
from shared.errors import ConfigError


def adapter_for(engine: Engine) -> DialectAdapter:
    name = engine.dialect.name
    if name == "postgresql":
        from shared.dialects.postgres import PostgresAdapter

        return PostgresAdapter(engine)
    if name == "sqlite":
        from shared.dialects.sqlite import SqliteAdapter

        return SqliteAdapter(engine)
    raise ConfigError(f"database '{name}' is not supported yet (supported: postgresql, sqlite)")
