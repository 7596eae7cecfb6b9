"""Sources and targets for the loading-option tests, the same in PostgreSQL, MariaDB and a
SQLite file: one table per test, made and filled through SQLAlchemy, read back normalised."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import text

from coordinator.launch import launch
from coordinator.watch import wait
from shared.dialects import adapter_for
from shared.engines import get_engine
from shared.metadata import store
from shared.metadata.models import ProcessLog

T0 = dt.datetime(2026, 1, 1)
COLUMNS = ["id", "code", "name", "email", "city", "day", "ts", "version", "updated_at"]
COLS = ", ".join(COLUMNS)
DDL = {
    "pg": (
        "CREATE TABLE {t} (id bigint, code varchar(10), name varchar(40), email varchar(40), "
        "city varchar(20), day date, ts timestamp, version integer, "
        "updated_at timestamp NOT NULL)"
    ),
    "mdb": (
        "CREATE TABLE {t} (id BIGINT, code VARCHAR(10), name VARCHAR(40), email VARCHAR(40), "
        "city VARCHAR(20), day DATE, ts DATETIME(6), version INT, "
        "updated_at DATETIME(6) NOT NULL) CHARACTER SET utf8mb4"
    ),
    "lite": (
        "CREATE TABLE {t} (id INTEGER, code VARCHAR(10), name VARCHAR(40), email VARCHAR(40), "
        "city VARCHAR(20), day DATE, ts TIMESTAMP, version INTEGER, "
        "updated_at TIMESTAMP NOT NULL)"
    ),
}
KINDS = ("pg", "mdb", "lite")


def row(i: int | None, code: str = "a", **overrides: Any) -> dict[str, Any]:
    n = i or 0
    values = {
        "id": i,
        "code": code,
        "name": f"name {i} {code}",
        "email": f"e{n}@x.org",
        "city": ("Oslo", "Lima", "Pune")[n % 3],
        "day": dt.date(2025, 1, 1) + dt.timedelta(days=n),
        "ts": T0 + dt.timedelta(hours=n, seconds=n),
        "version": 1,
        "updated_at": T0 + dt.timedelta(seconds=n),
    }
    values.update(overrides)
    return values


def moment(value: Any) -> Any:
    """A date or timestamp as read from any of the three databases, comparable."""
    if value is None or isinstance(value, (dt.date, dt.datetime)):
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value
    text_value = str(value)
    if len(text_value) == 10:
        return dt.date.fromisoformat(text_value)
    parsed = dt.datetime.fromisoformat(text_value)
    return parsed.astimezone(dt.UTC).replace(tzinfo=None) if parsed.tzinfo else parsed


def normal(column: str, value: Any) -> Any:
    if value is None:
        return None
    column = column.removeprefix("dw_")  # audit columns: as their unprefixed kind
    if column in ("id", "version"):
        return int(value)
    if column in ("day", "ts", "updated_at", "valid_from", "valid_to"):
        value = moment(value)
        return value.date() if column == "day" and isinstance(value, dt.datetime) else value
    if column in ("is_current", "is_deleted"):
        return bool(int(value))
    return str(value)


class Db:
    """One database of the matrix (source and target live in the same one)."""

    def __init__(self, kind: str, connection: str, url: str, schema: str | None = None):
        self.kind, self.connection, self.schema = kind, connection, schema
        self.engine = get_engine(url)
        self.adapter = adapter_for(self.engine)
        self.suffix = uuid.uuid4().hex[:8]
        self.tables: list[str] = []

    def name(self, table: str) -> str:
        """A table name unique to this test (MariaDB and SQLite are shared by the session)."""
        return f"{table}_{self.suffix}"

    def ident(self, table: str) -> str:
        quoted = self.adapter.q(self.name(table))
        return f"{self.adapter.q(self.schema)}.{quoted}" if self.schema else quoted

    def target(self, table: str) -> str:
        self.tables.append(self.name(table))
        return f"{self.schema}.{self.name(table)}" if self.schema else self.name(table)

    def _bind(self, values: dict[str, Any]) -> dict[str, Any]:
        if self.kind != "lite":
            return values
        out = {}
        for key, value in values.items():  # what a SQLite file holds: ISO text
            if isinstance(value, dt.datetime):
                value = value.isoformat(" ")
            elif isinstance(value, (dt.date, Decimal)):
                value = str(value)
            out[key] = value
        return out

    def create_source(self, table: str, rows: list[dict[str, Any]]) -> str:
        self.tables.append(self.name(table))
        with self.engine.begin() as conn:
            conn.execute(text(DDL[self.kind].format(t=self.ident(table))))
        self.insert(table, rows)
        return f"SELECT {COLS} FROM {self.ident(table)}"

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        marks = ", ".join(f":{c}" for c in COLUMNS)
        with self.engine.begin() as conn:
            for values in rows:  # one by one: source order is insertion order
                conn.execute(
                    text(f"INSERT INTO {self.ident(table)} ({COLS}) VALUES ({marks})"),
                    self._bind(values),
                )

    def execute(self, sql: str, **params: Any) -> int:
        with self.engine.begin() as conn:
            return conn.execute(text(sql), self._bind(params)).rowcount

    def all(self, sql: str, **params: Any) -> list:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), self._bind(params)).all()

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), self._bind(params)).scalar_one()

    def rows(
        self, table: str, columns: list[str], where: str = "1 = 1", order: str = ""
    ) -> list[dict[str, Any]]:
        cols = ", ".join(self.adapter.q(c) for c in columns)
        sql = f"SELECT {cols} FROM {self.ident(table)} WHERE {where}"
        if order:
            sql += f" ORDER BY {order}"
        return [{c: normal(c, v) for c, v in zip(columns, r)} for r in self.all(sql)]

    def drop_tables(self) -> None:
        if self.schema:  # the Postgres schema fixture drops everything
            return
        with self.engine.begin() as conn:
            for table in self.tables:
                conn.execute(text(f"DROP TABLE IF EXISTS {self.adapter.q(table)}"))


def expected(rows: list[dict[str, Any]], columns: list[str]) -> list[dict[str, Any]]:
    return [{c: normal(c, r[c]) for c in columns} for r in rows]


def mapping(db: Db, source: str, target: str, **overrides: Any) -> dict[str, Any]:
    spec = {
        "source": {"connection": db.connection, "query": source},
        "target": {"connection": db.connection, "table": db.target(target)},
        "keys": ["id"],
        "scd": {"type": 2},
        "checkpoint": {"strategy": "NONE"},
        "chunking": {"min_rows_for_parallel": 0, "rows_per_chunk": 10, "max_chunks": 4},
        "batch_rows": 50,
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    return spec


def run(settings, mapref: str, **kwargs: Any) -> ProcessLog:
    run_id = launch(mapref, settings=settings, **kwargs)
    return wait(run_id, settings=settings, timeout_s=90, poll_s=0.1)


def run_all(settings, *maprefs: str, **kwargs: Any) -> list[ProcessLog]:
    """Launch several mappings at once (they run side by side), then wait for each."""
    run_ids = [launch(m, settings=settings, **kwargs) for m in maprefs]
    return [wait(r, settings=settings, timeout_s=90, poll_s=0.1) for r in run_ids]


def chunks(settings, run_id: str):
    return store.get_chunks(get_engine(settings.metadata), run_id)


def checkpoint(settings, mapref: str):
    stored = store.get_checkpoint(get_engine(settings.metadata), mapref)
    return None if stored is None else stored.value
