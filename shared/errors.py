"""One exception hierarchy for chordload.

Every error is either *transient* (worth retrying: the same call may succeed later) or
*permanent* (retrying cannot help: bad config, bad SQL, bad data). The CLI maps the classes
onto exit codes; the workers decide retry vs. FAILED by the same flag, so there is one place
that says what "transient" means.
"""

from __future__ import annotations

import re


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


class RefusedError(ChordloadError):
    """An action that would destroy something was refused (e.g. overwriting a file). CLI exit 4."""

    exit_code = 4


class MetadataNotReadyError(ChordloadError):
    """The metadata database has not been migrated. CLI exit 2."""

    exit_code = 2


class LoadError(ChordloadError):
    """A load step failed permanently (bad SQL, missing column, data error)."""


class RaceError(ChordloadError):
    """A metadata write kept losing a race with a concurrent change; trying again is safe."""

    transient = True


class SourceUnavailableError(ChordloadError):
    """The source (or target) database could not be reached while planning. CLI exit 2."""

    exit_code = 2
    transient = True


class BrokerUnavailableError(ChordloadError):
    """The broker (or result backend) did not answer before a run was written. Nothing was
    launched and nothing written. CLI exit 2."""

    exit_code = 2
    transient = True


class LaunchError(ChordloadError):
    """The chord could not be sent to the broker; the run was marked FAILED (resumable)."""

    transient = True


class RunFinishedError(ChordloadError):
    """The run named is already terminal; nothing to stop. CLI exit 2."""

    exit_code = 2


class PlanningCancelled(ChordloadError):
    """Planning ended before the run launched: stopped, interrupted (Ctrl-C / SIGTERM of the
    coordinator) or out of ``planning.timeout_s``; the source queries were cancelled and the
    run ended with this message. CLI exit: 3 stopped, 130 interrupted, 1 timed out."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


# -- control flow inside a chunk attempt (never leave the chunk loader) ----------------------
class StopRequested(ChordloadError):
    """Raised between batches when the run has a stop request; ends the chunk STOPPED."""


class RelayRefused(ChordloadError):
    """A relayed batch was refused for its data; the chunk starts over typed."""


class FenceLost(ChordloadError):
    """This chunk attempt no longer owns its chunk (a newer attempt took it, the run ended or
    a newer run claimed the target, ``shared/fence.py``): it writes nothing more and ends
    without touching the chunk's status or counts."""


_TRANSIENT_SQLSTATES = {
    "40001",  # serialization_failure
    "40P01",  # deadlock_detected
    "55P03",  # lock_not_available
    "57P01",  # admin_shutdown
    "57P02",  # crash_shutdown
    "57P03",  # cannot_connect_now
    "53300",  # too_many_connections
}


_TRANSIENT_MYSQL_ERRNOS = {1040, 1205, 1213, 1927, 2002, 2003, 2006, 2013, 2055}
_TRANSIENT_MARKERS = (
    "database is locked",
    "connection",
    "server closed",
    "timeout",
    "deadlock",
    "gone away",
    "restart",
    "terminating",
)


def is_transient_db_error(exc: BaseException) -> bool:
    """Classify a driver/SQLAlchemy error: True when retrying the same work may succeed.

    Works on SQLAlchemy-wrapped errors and on raw driver errors (COPY bypasses SQLAlchemy).
    """
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, ChordloadError):
        return exc.transient
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.TimeoutError):  # connection pool exhausted for a while
        return True
    orig = getattr(exc, "orig", None) or exc
    pgcode = getattr(orig, "pgcode", None)
    if pgcode:
        return pgcode in _TRANSIENT_SQLSTATES or pgcode.startswith("08")
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):  # pymysql: (errno, message)
        return args[0] in _TRANSIENT_MYSQL_ERRNOS
    if type(orig).__name__ in ("OperationalError", "InterfaceError"):
        # psycopg2 raises these without a code when the server went away; sqlite3 for locks
        message = str(orig).lower()
        return type(orig).__module__.startswith("psycopg2") or any(
            marker in message for marker in _TRANSIENT_MARKERS
        )
    return False


def describe_db_error(exc: BaseException) -> str:
    """The database's own message without SQLAlchemy's statement/parameter dump.

    SQLAlchemy appends the SQL and bound parameters to its messages; parameters are row
    values and must not land in process_log messages, so only the driver's text is kept.
    """
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    column = _copy_column(orig if orig is not None else exc)
    if column and f'column "{column}"' not in first:  # PostgreSQL's own may name it
        return f"column {column!r}: {first}"
    return first


_COPY_CONTEXT = re.compile(r"^COPY [^,]+, line \d+, column (?P<column>.+?): ", re.MULTILINE)


def _copy_column(orig: object) -> str | None:
    """The column a PostgreSQL COPY refused a value of (its message names only the value;
    the error's context names the column)."""
    context = getattr(getattr(orig, "diag", None), "context", None)
    found = _COPY_CONTEXT.search(context) if isinstance(context, str) else None
    return found.group("column") if found else None


_MYSQL_DATA_ERRNOS = {1048, 1264, 1265, 1292, 1366, 1406, 3819, 4025}


def is_data_error(exc: BaseException) -> bool:
    """A row's values were rejected (too long, out of range, NOT NULL, CHECK, bad format):
    the rows can be bisected to find the bad ones. Unique violations are not data errors."""
    from sqlalchemy import exc as sa_exc

    orig = getattr(exc, "orig", None) or exc
    pgcode = getattr(orig, "pgcode", None)
    if pgcode:
        return pgcode.startswith("22") or pgcode in ("23502", "23514")
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):  # pymysql: (errno, message)
        return args[0] in _MYSQL_DATA_ERRNOS
    if isinstance(exc, sa_exc.IntegrityError):
        message = str(orig or exc)
        return "NOT NULL" in message or "CHECK" in message
    return isinstance(exc, sa_exc.DataError)


def is_unique_violation(exc: BaseException) -> bool:
    """A unique index refused the row (PostgreSQL's 23505)."""
    orig = getattr(exc, "orig", None) or exc
    return getattr(orig, "pgcode", None) == "23505"
