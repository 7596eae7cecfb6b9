"""One exception hierarchy for chordload.

Every error is either *transient* (worth retrying: the same call may succeed later) or
*permanent* (retrying cannot help: bad config, bad SQL, bad data). The CLI maps the classes
onto exit codes; the workers decide retry vs. FAILED by the same flag, so there is one place
that says what "transient" means.
"""
from __future__ import annotations


class ChordloadError(Exception):
    """Base of all chordload errors. ``transient`` says whether a retry may succeed."""

    transient = False
    exit_code = 1


class ConfigError(ChordloadError):
    """The config file or a mapping is invalid. Nothing was written. CLI exit 2."""

    exit_code = 2


class NotFoundError(ChordloadError):
    """A run or mapping that the user named does not exist. CLI exit 2."""

    exit_code = 2


class RunRefusedError(ChordloadError):
    """A run cannot start now, e.g. another run of the mapping is active. CLI exit 4."""

    exit_code = 4

    def __init__(self, message: str, active_run_id: str | None = None):
        super().__init__(message)
        self.active_run_id = active_run_id


class MetadataNotReadyError(ChordloadError):
    """The metadata database has not been migrated. CLI exit 2."""

    exit_code = 2


class LoadError(ChordloadError):
    """A load step failed permanently (bad SQL, missing column, data error)."""


class TransientLoadError(LoadError):
    """A load step failed for a reason that may go away: connection lost, deadlock, timeout."""

    transient = True


class SourceUnavailableError(ChordloadError):
    """The source (or target) database could not be reached while planning. CLI exit 2."""

    exit_code = 2
    transient = True


_TRANSIENT_SQLSTATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now
    "53300",  # too_many_connections
}


def is_transient_db_error(exc: BaseException) -> bool:
    """Classify a driver/SQLAlchemy error: True when retrying the same work may succeed."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, ChordloadError):
        return exc.transient
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.TimeoutError)):
        orig = getattr(exc, "orig", None)
        pgcode = getattr(orig, "pgcode", None)
        if pgcode is not None:
            return pgcode in _TRANSIENT_SQLSTATES or pgcode.startswith("08")
        message = str(orig or exc).lower()
        return any(
            marker in message
            for marker in ("database is locked", "connection", "server closed", "timeout",
                           "deadlock", "gone away", "lost connection", "restart")
        )
    orig = getattr(exc, "orig", None)
    pgcode = getattr(orig, "pgcode", None)
    return pgcode in _TRANSIENT_SQLSTATES if pgcode else False


def describe_db_error(exc: BaseException) -> str:
    """The database's own message without SQLAlchemy's statement/parameter dump.

    SQLAlchemy appends the SQL and bound parameters to its messages; parameters are row
    values and must not land in process_log messages, so only the driver's text is kept.
    """
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
