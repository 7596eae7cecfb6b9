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
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from shared.config.settings import Settings

_lock = threading.Lock()
_engines: dict[tuple[int, str, bool, bool, SessionLimits | None], Engine] = {}


@dataclass(frozen=True)
class SessionLimits:
    """Server-side limits set on every session of an engine (see ``target_sessions`` in the
    settings): how long a session may sit idle inside a transaction, and how long one
    statement may run (0: no limit)."""

    idle_in_transaction_s: int
    statement_s: int = 0


def _install_session_limits(engine: Engine, limits: SessionLimits) -> None:
    backend = engine.url.get_backend_name()

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        cursor = dbapi_conn.cursor()
        try:
            if backend == "postgresql":
                cursor.execute(
                    "SET idle_in_transaction_session_timeout = "
                    f"{limits.idle_in_transaction_s * 1000}"
                )
                cursor.execute(f"SET statement_timeout = {limits.statement_s * 1000}")
            elif backend in ("mysql", "mariadb") and "mariadb" in _server_version(cursor):
                cursor.execute(
                    f"SET SESSION idle_transaction_timeout = {limits.idle_in_transaction_s}"
                )
                cursor.execute(f"SET SESSION max_statement_time = {limits.statement_s}")
        finally:
            cursor.close()
        if backend == "postgresql":
            dbapi_conn.commit()  # psycopg2 opened a transaction for the SETs


def _server_version(cursor) -> str:
    cursor.execute("SELECT VERSION()")
    return str(cursor.fetchone()[0]).lower()


SQLITE_BUSY_TIMEOUT_S = 120
POOL_SIZE = 5  # per database per process; a chunk holds at most 2 (source + target) at once
READ_ONLY = {"chordload_read_only": True}


def _sqlite_row_hash(*values: object) -> str:
    """``chordload_row_hash(c1, c2, ...)``, SQLite's row hash (it has no md5): each value as
    its storage class, its length and its bytes, so NULL differs from every value and no
    two rows of values run into each other (version 2; version 1 joined the values' text
    with U+001F, so ('p\x1fq', 'r') and ('p', 'q\x1fr') hashed alike)."""
    digest = hashlib.md5()
    for value in values:
        if value is None:
            digest.update(b"n;")
            continue
        if isinstance(value, bytes):
            tag, data = b"b", value
        elif isinstance(value, int):
            tag, data = b"i", str(value).encode()
        elif isinstance(value, float):
            tag, data = b"f", repr(value).encode()
        else:
            tag, data = b"s", str(value).encode("utf-8", "surrogatepass")
        digest.update(tag + str(len(data)).encode() + b":" + data)
    return digest.hexdigest()


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        cursor = dbapi_conn.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()
        dbapi_conn.create_function("chordload_row_hash", -1, _sqlite_row_hash, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        if conn.get_execution_options().get("chordload_read_only"):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


QUICK_TIMEOUT_S = 3  # connect and pool timeouts of a quick engine


def _new_engine(url: str, pre_ping: bool, quick: bool = False) -> Engine:
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if quick and backend != "sqlite":
        connect_args = (
            {"connect_timeout": QUICK_TIMEOUT_S}
            if backend in ("postgresql", "mysql", "mariadb")
            else {}
        )
        return create_engine(
            url,
            pool_size=1,
            max_overflow=0,
            pool_pre_ping=True,
            pool_timeout=QUICK_TIMEOUT_S,
            connect_args=connect_args,
        )
    if backend == "sqlite":
        engine = create_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}
        )
        _install_sqlite_hooks(engine)
        return engine
    pooled = {
        "pool_pre_ping": pre_ping,
        "pool_size": POOL_SIZE,
        "max_overflow": 0,
        "pool_timeout": 60,
        "pool_recycle": 1800,
    }
    if backend in ("mysql", "mariadb"):
        # UTC sessions and UTC binding of aware datetimes (see shared/dialects/mysql.py);
        # READ COMMITTED: chunks own disjoint key ranges, and InnoDB's gap locks under
        # REPEATABLE READ would only make concurrent chunks on one target deadlock.
        from shared.dialects.mysql import install_engine_hooks

        engine = create_engine(url, isolation_level="READ COMMITTED", **pooled)
        install_engine_hooks(engine)
        return engine
    if backend == "postgresql":
        # Engines are made per process (see get_engine), so the pid names this process's
        # pool in pg_stat_activity.
        return create_engine(
            url, connect_args={"application_name": f"chordload/{os.getpid()}"}, **pooled
        )
    return create_engine(url, **pooled)


def get_engine(
    url: str, pre_ping: bool = True, quick: bool = False, limits: SessionLimits | None = None
) -> Engine:
    """The process's pooled engine for ``url``. ``pre_ping=False`` skips the liveness round
    trip at every checkout, for callers that retry transient errors anyway (the chunk
    loader's metadata writes, several per chunk): a connection found dead fails once, the
    pool drops its connections, and the retry gets a fresh one. ``quick``: one connection
    that gives up within seconds, for lookups that must never hang (naming a run's mapping
    in a log line). ``limits``: a pool of its own whose sessions carry those server-side
    limits (the chunk loader's target writes)."""
    key = (os.getpid(), url, pre_ping, quick, limits)
    engine = _engines.get(key)
    if engine is None:
        with _lock:
            engine = _engines.get(key)
            if engine is None:
                engine = _new_engine(url, pre_ping, quick)
                if limits is not None:
                    _install_session_limits(engine, limits)
                _engines[key] = engine
    return engine


def writer_metadata(settings: Settings, pre_ping: bool = False) -> Engine:
    """The metadata engine for writes a worker may be frozen in the middle of (a chunk
    attempt's records, a run's finalizing, reconcile's relaunches and failures, a chord
    errback, a verify's ranges and verdict): its sessions end after
    ``target_sessions.idle_in_transaction_timeout_s`` idle inside a transaction (as the
    attempt's target sessions). A worker frozen between an UPDATE of a chunk_log or
    process_log row and the COMMIT would otherwise hold that row until it wakes, and the
    attempt that takes the chunk over (``begin_chunk``) or the run's other finalizers
    (reconcile, stop) would wait for it. Woken, the frozen COMMIT fails and the write is
    retried or found done by someone else. ``pre_ping``: for callers that do not retry a
    connection found dead (reconcile, which must work right after a restart of the
    metadata server)."""
    limits = SessionLimits(settings.target_sessions.idle_in_transaction_timeout_s)
    return get_engine(settings.metadata, pre_ping=pre_ping, limits=limits)


def dispose_all() -> None:
    with _lock:
        for (pid, *_), engine in list(_engines.items()):
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
