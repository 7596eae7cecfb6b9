"""Engines: one pooled SQLAlchemy engine per URL per process, never shared across a fork.

Celery's prefork pool forks children after the app is imported. A connection pool inherited
through fork would share sockets between processes, so the cache is keyed by PID and the
child drops inherited pools (without closing the parent's sockets) as SQLAlchemy documents.
SQLite engines take write locks up front (``BEGIN IMMEDIATE``) so concurrent writers wait on
the busy timeout instead of failing with "database is locked"; readers stay deferred.
"""
from __future__ import annotations

import hashlib
import os
import threading

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

_lock = threading.Lock()
_engines: dict[tuple[int, str], Engine] = {}

SQLITE_BUSY_TIMEOUT_S = 120
READ_ONLY = {"chordload_read_only": True}


def _sqlite_row_hash(*values: object) -> str:
    """``chordload_row_hash(c1, c2, ...)``: SQLite has no md5; same idea as Postgres' md5(row)."""
    text = "\x1f".join("\x00" if v is None else repr(v) if isinstance(v, float) else str(v)
                       for v in values)
    return hashlib.md5(text.encode()).hexdigest()


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()
        dbapi_conn.create_function("chordload_row_hash", -1, _sqlite_row_hash, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        if conn.get_execution_options().get("chordload_read_only"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def _new_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S,
                                                  "check_same_thread": False})
        _install_sqlite_hooks(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5,
                         pool_recycle=1800)


def get_engine(url: str) -> Engine:
    key = (os.getpid(), url)
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _engines[key] = _new_engine(url)
    return engine


def dispose_all() -> None:
    with _lock:
        for (pid, _url), engine in list(_engines.items()):
            if pid == os.getpid():
                engine.dispose()
        _engines.clear()


def _after_fork_in_child() -> None:
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)


def mask_url(url: str) -> str:
    """A URL with its password replaced by ***, for logs, errors and CLI output."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - never let masking leak the raw string
        return "<unparseable url>"
