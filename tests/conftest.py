"""Test fixtures against real services.

Each test session gets its own Postgres databases (``cl_<token>_wh`` for sources and targets,
``cl_<token>_meta`` for metadata), a MariaDB database ``cl_<token>_wh`` and a SQLite file
(connections ``mdb`` and ``lite``, for sources and targets), its own Redis key prefix and
Celery queue, and drops them all at the end, so concurrent runs never collide: ``make test``
runs two sessions at once (pytest-xdist), each process with its own token. Services must
be up (``make test`` starts them); a missing service is an error, not a skip.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from sqlalchemy import create_engine, text

from shared.config.settings import Settings, settings_from_dict
from shared.engines import dispose_all, get_engine
from shared.metadata.schema import upgrade
from tests.cliutil import clean_cli_env as clean_cli_env  # fixture: the CLI tests' clean env
from tests.worker_process import WorkerProcess

# The tests that press Ctrl-C need the CLI they start to take SIGINT. A test run started in
# the background without job control (`cmd &` in a script, nohup) inherits SIGINT ignored,
# and so would every process it starts: Python leaves an inherited SIG_IGN alone, as a
# program should. Handling it here makes the children start with the default again (exec
# resets a handled signal, not an ignored one).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

TOKEN = uuid.uuid4().hex[:8]
PG_HOST = os.environ.get("CHORDLOAD_TEST_PG", "postgresql+psycopg2://root@127.0.0.1:5432")
REDIS_URL = os.environ.get("CHORDLOAD_TEST_REDIS", "redis://127.0.0.1:6379/0")
MARIADB_HOST = os.environ.get("CHORDLOAD_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")
REPO = Path(__file__).resolve().parent.parent
SECRET_PASSWORD = "Sup3r-S3cret-pw-" + TOKEN


def _admin_engine():
    return create_engine(f"{PG_HOST}/postgres", isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="session")
def pg_urls() -> Iterator[dict[str, str]]:
    names = {"wh": f"cl_{TOKEN}_wh", "meta": f"cl_{TOKEN}_meta", "aux": f"cl_{TOKEN}_aux"}
    admin = _admin_engine()
    try:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        pytest.fail(f"PostgreSQL at {PG_HOST} is not usable ({exc}); run `make services`")
    yield {role: f"{PG_HOST}/{name}" for role, name in names.items()}
    dispose_all()
    with admin.connect() as conn:
        for name in names.values():
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A per-session MariaDB database ``cl_<token>_wh`` (sources and targets), dropped at the end."""
    name = f"cl_{TOKEN}_wh"
    admin = create_engine(f"{MARIADB_HOST}/", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    except Exception as exc:
        pytest.fail(f"MariaDB at {MARIADB_HOST} is not usable ({exc}); run `make services`")
    yield f"{MARIADB_HOST}/{name}?charset=utf8mb4"
    dispose_all()
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory) -> str:
    """A per-session SQLite file for sources and targets (an absolute path: workers use it)."""
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'wh.db'}"


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    prefix = f"cltest:{TOKEN}:"
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis at {REDIS_URL} is not usable ({exc}); run `make services`")
    yield prefix
    for key in client.scan_iter(match=f"{prefix}*", count=1000):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def base_config(pg_urls, mariadb_url, sqlite_url, redis_prefix) -> dict[str, Any]:
    """The session's config as a dict: connections, broker, backend, queue; no mappings."""
    return {
        "metadata": pg_urls["meta"],
        "broker": REDIS_URL,
        "result_backend": REDIS_URL,
        "connections": {
            "wh": pg_urls["wh"],
            "mdb": mariadb_url,
            "lite": sqlite_url,
            # a second Postgres database for fault tests that cut it off
            "aux": pg_urls["aux"],
            # trust auth ignores the password: it is there to be kept secret
            "secretwh": pg_urls["wh"].replace("root@", f"root:{SECRET_PASSWORD}@"),
        },
        "celery": {
            "queue": f"cl-{TOKEN}",
            "broker_transport_options": {"global_keyprefix": redis_prefix},
            "result_backend_transport_options": {"global_keyprefix": redis_prefix},
        },
    }


@pytest.fixture(scope="session")
def config_path(base_config, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "chordload.yaml"
    path.write_text(yaml.safe_dump(base_config))
    return path


@pytest.fixture(scope="session")
def metadata_ready(base_config) -> str:
    upgrade(get_engine(base_config["metadata"]))
    return base_config["metadata"]


@pytest.fixture(scope="session")
def session_settings(base_config, metadata_ready) -> Settings:
    return settings_from_dict(base_config, "test config")


@pytest.fixture
def make_settings(base_config, session_settings):
    """Settings with the session's services plus the given mappings."""

    def build(mappings: dict[str, Any]) -> Settings:
        return settings_from_dict({**base_config, "mappings": mappings}, "test config")

    return build


@pytest.fixture(scope="session")
def wh(pg_urls):
    """An engine on the warehouse database (sources and targets live there)."""
    return get_engine(pg_urls["wh"])


@pytest.fixture(scope="session")
def workers(config_path, session_settings, tmp_path_factory) -> Iterator[WorkerProcess]:
    """Two prefork worker processes (one Celery worker, concurrency 2) on the session queue."""
    log_dir = tmp_path_factory.mktemp("workers")
    worker = WorkerProcess(
        config_path,
        queue=session_settings.celery.queue,
        name=f"w1-{TOKEN}",
        concurrency=2,
        log_path=log_dir / "w1.log",
    )
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def schema(wh, request) -> Iterator[str]:
    """A fresh Postgres schema per test for its source and target tables."""
    name = "t_" + uuid.uuid4().hex[:10]
    with wh.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    yield name
    with wh.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
