"""Dialect adapters: everything that differs between databases lives behind one interface."""

from __future__ import annotations

from sqlalchemy import Engine

from shared.dialects.base import DialectAdapter
from shared.errors import ConfigError

SUPPORTED = ("postgresql", "mysql/mariadb (mysql+pymysql://)", "sqlite")


def adapter_for(engine: Engine) -> DialectAdapter:
    name = engine.dialect.name
    driver = engine.dialect.driver
    if name == "postgresql":
        from shared.dialects.postgres import PostgresAdapter

        return PostgresAdapter(engine)
    if name == "sqlite":
        from shared.dialects.sqlite import SqliteAdapter

        return SqliteAdapter(engine)
    if name in ("mysql", "mariadb"):
        if driver != "pymysql":
            raise ConfigError(
                f"MariaDB/MySQL connections must use the PyMySQL driver "
                f"(mysql+pymysql://...), not '{name}+{driver}'"
            )
        from shared.dialects.mysql import MysqlAdapter

        return MysqlAdapter(engine)
    raise ConfigError(
        f"database '{name}' (driver '{driver}') is not supported; supported: {', '.join(SUPPORTED)}"
    )
