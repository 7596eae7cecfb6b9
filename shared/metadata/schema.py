"""Migrating the metadata database (``chordload db upgrade``) and checking it is migrated."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from shared.errors import MetadataNotReadyError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def upgrade(engine: Engine) -> str:
    """Apply all migrations; returns the head revision."""
    cfg = _alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    return head_revision()


def head_revision() -> str:
    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    assert head is not None  # migrations/versions/ always holds revisions
    return head


def current_revision(engine: Engine) -> str | None:
    # Alembic logs its dialect choice at INFO on every configure; a revision check runs on
    # every launch, so keep it quiet.
    logging.getLogger("alembic.runtime.migration").setLevel(logging.WARNING)
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def require_current(engine: Engine) -> None:
    """Refuse to work on a metadata database that is not at the head revision."""
    current = current_revision(engine)
    if current != head_revision():
        raise MetadataNotReadyError(
            f"the metadata database is at revision {current or 'none'}, expected "
            f"{head_revision()}: run `chordload db upgrade` first"
        )
