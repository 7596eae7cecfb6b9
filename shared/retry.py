"""One retry policy for transient errors (deadlock, serialization failure, lost connection),
with every constant stated here.

- ``METADATA_WRITE``: the short metadata transactions; each commits whole or not at all, so
  running it again after a transient failure is safe.
- ``FINALIZE``: finalizing a run and its hard-delete pass, which must not be lost to a blip.
- ``TASK_METADATA``: a chunk task whose metadata database is unreachable even after
  ``METADATA_WRITE`` retries asks Celery to run it again later, for at least
  ``TASK_METADATA.attempts`` times and up to ``TASK_METADATA_WINDOW_S`` into the outage.
- A chunk's own transient errors follow the mapping's ``retries`` (``chunk_retry_delay_s``).
- ``ride_out``: what a person waits on (``run --wait``, ``watch``) keeps polling through a
  metadata outage of up to ``POLL_OUTAGE_S`` instead of failing while the run goes on.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from shared.errors import is_transient_db_error

if TYPE_CHECKING:
    from shared.config.mapping import RetrySpec

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("chordload.retry")


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with "equal jitter": half of min(max, base * 2**attempt) fixed,
    half random. Retriers still spread out, and a run of retries is guaranteed to wait at
    least half the nominal total (full jitter can retry several times within milliseconds)."""
    cap = min(max_s, base_s * (2**attempt))
    return cap / 2 + random.uniform(0, cap / 2)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    base_s: float
    max_s: float

    def backoff_s(self, attempt: int) -> float:
        return backoff_s(attempt, self.base_s, self.max_s)


METADATA_WRITE = RetryPolicy(attempts=6, base_s=0.05, max_s=5.0)
FINALIZE = RetryPolicy(attempts=8, base_s=0.05, max_s=10.0)
TASK_METADATA = RetryPolicy(attempts=5, base_s=1.0, max_s=10.0)
TASK_METADATA_WINDOW_S = 300.0  # and for as long as the outage lasts up to this
POLL_OUTAGE_S = 300.0
POLL_BACKOFF = RetryPolicy(attempts=0, base_s=0.5, max_s=5.0)  # attempts: bounded by time


def retry_transient(
    policy: RetryPolicy = METADATA_WRITE,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Run the decorated function again on a transient error, as ``policy`` says."""

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            for attempt in range(policy.attempts):
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    if attempt == policy.attempts - 1 or not is_transient_db_error(exc):
                        raise
                    delay = policy.backoff_s(attempt)
                    log.warning(
                        "%s: transient error (%s); retry %d/%d in %.2fs",
                        fn.__name__,
                        str(exc).splitlines()[0][:200],
                        attempt + 1,
                        policy.attempts - 1,
                        delay,
                    )
                    time.sleep(delay)
            raise AssertionError("unreachable")

        return wrapper

    return decorate


def retry_allowed(retries: RetrySpec, retries_done: int, failing_for_s: float) -> bool:
    """Whether a chunk's transient error is retried: ``retries.max`` times at least, and
    while the failure has lasted less than ``retries.window_s``."""
    return retries_done < retries.max or failing_for_s < retries.window_s


def chunk_retry_delay_s(
    retries: RetrySpec, retries_done: int, visibility_timeout_s: float
) -> float:
    """How long a chunk waits before its next attempt. It stays well inside the broker's
    visibility timeout, or Redis would redeliver the waiting retry as if its worker had
    died."""
    cap_s = min(retries.backoff_max_s, visibility_timeout_s / 2)
    return backoff_s(retries_done, retries.backoff_s, cap_s)


def ride_out(
    fn: Callable[[], T],
    window_s: float = POLL_OUTAGE_S,
    on_error: Callable[[BaseException, float], None] | None = None,
) -> T:
    """``fn()``, called again on transient errors until it succeeds or ``window_s`` has
    passed since the first failure (then the last error is raised). ``on_error`` hears of
    each failure and how long the outage has lasted."""
    started: float | None = None
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            if not is_transient_db_error(exc):
                raise
            now = time.monotonic()
            started = now if started is None else started
            if now - started > window_s:
                raise
            if on_error is not None:
                on_error(exc, now - started)
            time.sleep(POLL_BACKOFF.backoff_s(attempt))
            attempt += 1
