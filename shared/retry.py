"""Retrying transient database errors (deadlock, serialization failure, lost connection).

Used for the short metadata transactions: each either commits whole or not at all, so
running it again after a transient failure is safe.
"""
from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from shared.errors import is_transient_db_error

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("chordload.retry")


def backoff_s(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with "equal jitter": half of min(max, base * 2**attempt) fixed,
    half random. Retriers still spread out, and a run of retries is guaranteed to wait at
    least half the nominal total (full jitter can retry several times within milliseconds)."""
    cap = min(max_s, base_s * (2 ** attempt))
    return cap / 2 + random.uniform(0, cap / 2)


def retry_transient(attempts: int = 6, base_s: float = 0.05, max_s: float = 5.0):
    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            for attempt in range(attempts):
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    if attempt == attempts - 1 or not is_transient_db_error(exc):
                        raise
                    delay = backoff_s(attempt, base_s, max_s)
                    log.warning("%s: transient error (%s); retry %d/%d in %.2fs", fn.__name__,
                                str(exc).splitlines()[0][:200], attempt + 1, attempts - 1, delay)
                    time.sleep(delay)
            raise AssertionError("unreachable")

        return wrapper

    return decorate
