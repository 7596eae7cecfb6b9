"""Loading one chunk: stream its key range from the source in batches and apply each batch
to the target set-based, one transaction per batch.

Per batch: keep the rows in the window (a PYTHON checkpoint is computed here), resolve
duplicate business keys, empty the stage, bulk-load the rows into it (COPY on Postgres),
apply the SCD SQL, commit; then record progress in chunk_log. The chunk is read in business
key order, so memory is one batch plus the keys of the previous batch, whatever the size of
the chunk (``rows_per_chunk``). A batch rejected for its data (a value too long, out of range,
NOT NULL, CHECK) is bisected in savepoints until the bad rows are isolated: the rest is
loaded and each bad row is kept in error_row. Transient errors ask the task for a retry; the
loader itself never raises.

Duplicate business keys in one extract: the row with the highest checkpoint value wins
(NULL lowest; with no checkpoint every row ties), then the last in source order; every other
row of the key is counted in ``rows_duplicate``. All rows of a key are in one chunk (chunks
split on key columns) and arrive together (key order), but they can straddle a batch
boundary: a later winner then overwrites, in place, the version this run wrote for the key
(SCD2 keeps one version per key per run), and a later loser is not written. "Last in source
order" is the last in the order the source returns equal keys.
"""
from __future__ import annotations

import datetime as dt
import logging
import os
import uuid
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Engine

from shared.engines import READ_ONLY, get_engine
from shared.dialects import adapter_for
from shared.dialects.base import ApplyCounts, DialectAdapter
from shared.errors import describe_db_error, is_data_error, is_transient_db_error
from shared.lifecycle.finalize import finalize_run
from shared.metadata import store
from shared.metadata.store import BatchProgress, ChunkStartOutcome, RecordedBatch
from shared.run.plan import PlannedRun
from shared.checkpoint import load_function
from shared.retry import backoff_s
from shared.config.settings import Settings
from shared.run.statuses import ChunkStatus
from shared.timeutil import utcnow
from shared.run.values import Value, encode_value, max_value, rank
from shared.run.window import ChunkRange, chunk_select

log = logging.getLogger("chordload.chunk")


@dataclass
class ChunkCounts:
    rows_read: int = 0
    inserted: int = 0
    changed: int = 0
    unchanged: int = 0
    errored: int = 0
    duplicate: int = 0


_ERRORED = object()  # a key whose winning row was rejected: the next row of it starts over


@dataclass
class ChunkResult:
    chunk_no: int
    status: ChunkStatus
    counts: ChunkCounts = field(default_factory=ChunkCounts)
    max_checkpoint: Value = None
    error: str | None = None
    retry_in_s: float | None = None  # set: the task should retry itself after this delay

    def to_json(self) -> dict[str, Any]:
        """What the task returns through the result backend: small and JSON only."""
        return {"chunk_no": self.chunk_no, "status": self.status.value,
                "counts": asdict(self.counts), "max_checkpoint": encode_value(self.max_checkpoint),
                "error": self.error}


class StopRequested(Exception):
    """Raised between batches when the run has a stop request; ends the chunk STOPPED."""


class RelayRefused(Exception):
    """A relayed batch was refused for its data; the chunk starts over typed."""


def load_chunk(settings: Settings, run_id: str, chunk: ChunkRange, worker: str,
               task_id: str | None = None, retries_done: int = 0) -> ChunkResult:
    metadata = get_engine(settings.metadata, pre_ping=False)
    start = store.begin_chunk(metadata, run_id, chunk.chunk_no, f"{worker}/{os.getpid()}",
                              task_id)
    if start.outcome is ChunkStartOutcome.SUPERSEDED:
        log.info("run %s chunk %s: task %s belongs to an earlier launch; nothing to do", run_id,
                 chunk.chunk_no, task_id)
        return ChunkResult(chunk.chunk_no, ChunkStatus.REVOKED, error="superseded by a resume")
    if start.outcome is ChunkStartOutcome.ENDED:
        log.info("run %s chunk %s is already %s; this delivery does nothing", run_id,
                 chunk.chunk_no, start.status.value)
        return ChunkResult(chunk.chunk_no, start.status, error=start.message)
    if start.outcome is ChunkStartOutcome.STOPPED:
        if store.open_chunk_count(metadata, run_id) == 0:
            finalize_run(metadata, run_id, settings=settings)
        return ChunkResult(chunk.chunk_no, ChunkStatus.STOPPED, error="stop requested")
    planned = planned_run(metadata, run_id, start.launches)
    replay = start.launches > 1 or start.attempts > 1
    result = ChunkResult(chunk.chunk_no, ChunkStatus.RUNNING)
    load: ChunkLoad | None = None
    try:
        load = ChunkLoad(settings, planned, chunk, result, replay)
        load.run()
    except StopRequested:
        result.status = ChunkStatus.STOPPED
        result.error = "stopped by request at a batch boundary"
    except Exception as exc:  # noqa: BLE001 - the task must end with a status, not raise
        result.error = describe_db_error(exc)
        retries = planned.spec.retries
        if is_transient_db_error(exc) and retries_done < retries.max:
            # stay well inside the broker's visibility timeout, or Redis would redeliver the
            # waiting retry as if its worker had died
            cap_s = min(retries.backoff_max_s, settings.visibility_timeout_s / 2)
            result.retry_in_s = backoff_s(retries_done, retries.backoff_s, cap_s)
            result.status = ChunkStatus.PENDING
            store.retry_chunk(metadata, run_id, chunk.chunk_no,
                              f"attempt {retries_done + 1} failed ({result.error}); retry "
                              f"{retries_done + 1}/{retries.max} in {result.retry_in_s:.1f}s")
            log.warning("run %s chunk %s: transient error, retry %d/%d in %.1fs: %s", run_id,
                        chunk.chunk_no, retries_done + 1, retries.max, result.retry_in_s,
                        result.error)
            return result
        result.status = ChunkStatus.FAILED
        if is_transient_db_error(exc):
            result.error = f"{result.error} (after {retries_done} retries)"
        log.warning("run %s chunk %s failed: %s", run_id, chunk.chunk_no, result.error)
    else:
        result.status = ChunkStatus.SUCCESS
    # The last chunk to end finalizes the run: a stop ends the run at once, and a chord
    # callback that fires early or never is not needed. Chunks ending together take turns on
    # the run's row, so the last one always counts zero open chunks; the count keeps the other
    # chunks from loading the whole run.
    last_batch = load.unrecorded if load is not None else None
    if store.finish_chunk(metadata, run_id, chunk.chunk_no, result.status, result.error,
                          last_batch) == 0:
        finalize_run(metadata, run_id, settings=settings)
    return result


_planned_cache: dict[tuple[str, int], PlannedRun] = {}


def planned_run(metadata: Engine, run_id: str, launch: int) -> PlannedRun:
    """The run as planned, read and rebuilt once per process and launch: reading the run's
    row and validating its mapping is the same work for each of its chunks."""
    key = (run_id, launch)
    planned = _planned_cache.get(key)
    if planned is None:
        if len(_planned_cache) >= 32:
            _planned_cache.clear()
        planned = _planned_cache[key] = PlannedRun.from_row(store.get_run(metadata, run_id))
    return planned


class ChunkLoad:
    """One attempt at one chunk: the streaming loop and the per-batch apply."""

    def __init__(self, settings: Settings, planned: PlannedRun, chunk: ChunkRange,
                 result: ChunkResult, replay: bool = False):
        spec = planned.spec
        self.replay = replay  # an earlier attempt of this run may have written these rows
        self.settings = settings
        self.planned = planned
        self.chunk = chunk
        self.result = result
        self.metadata = get_engine(settings.metadata, pre_ping=False)
        self.source = get_engine(settings.connection_url(spec.source.connection))
        self.target = get_engine(settings.connection_url(spec.target.connection))
        self.source_adapter: DialectAdapter = adapter_for(self.source)
        self.target_adapter: DialectAdapter = adapter_for(self.target)
        self.key_positions = [planned.columns.index(k) for k in spec.keys]
        self.checkpoint_positions = [planned.columns.index(c) for c in spec.checkpoint_columns]
        self.python_filter = planned.python_filter
        self.python_function = (load_function(planned.python_filter.function_path)
                                if planned.python_filter else None)
        self.scd2 = planned.scd2_options() if spec.scd.type == 2 else None
        # key -> rank of the checkpoint value of the row that wins it so far, for the keys of
        # the latest batch only: rows arrive in key order, so no older key can come back
        self.winners: dict[Any, Any] = {}
        self.stage = ""
        # the latest committed batch, recorded when the next one is read (with the stop
        # check) or, for the chunk's last batch, with the chunk's end
        self.unrecorded: RecordedBatch | None = None

    def run(self) -> None:
        with self.target.connect() as tconn:
            try:
                if self._relays():
                    try:
                        if self._run_relayed(tconn):
                            return
                    except RelayRefused as exc:
                        log.info("run %s chunk %s: %s; loading it again typed, to isolate the "
                                 "bad rows", self.planned.run_id, self.chunk.chunk_no, exc)
                        self._restart_typed()
                self._run_typed(tconn)
            finally:
                if tconn.in_transaction():
                    tconn.rollback()
                if self.stage:
                    with tconn.begin():
                        self.target_adapter.release_stage(tconn, self.stage)

    def _ensure_stage(self, tconn: Connection) -> None:
        """The stage typed batches load through, made on first use (a relayed chunk may
        never need it)."""
        if not self.stage:
            with tconn.begin():
                self.stage = self.target_adapter.chunk_stage(tconn, self.planned.spec.target,
                                                              self.planned.columns)

    def _run_typed(self, tconn: Connection) -> None:
        """Read the chunk as Python rows and load them batch by batch."""
        self._ensure_stage(tconn)
        spec = self.planned.spec
        sql, params = chunk_select(self.source_adapter, spec.source.query, self.planned.columns,
                                   self.planned.window, self.planned.split_columns, self.chunk,
                                   order_by=spec.keys)
        with self.source.connect().execution_options(**READ_ONLY) as sconn:
            for rows in self.source_adapter.stream(sconn, sql, params, spec.batch_rows):
                self._record_previous()
                self._load_batch(tconn, rows)

    # -- relayed: PostgreSQL to PostgreSQL as COPY text (shared/dialects/relay.py) ----------
    def _relays(self) -> bool:
        """Whether the chunk's rows can go from source to stage as COPY text, never parsed in
        Python: PostgreSQL to PostgreSQL, and the loader needs no value of a row in Python
        (no PYTHON checkpoint function; one checkpoint column at most, whose maximum SQL
        takes). Batches that need a closer look (NULL or duplicate keys, a key continued
        from the previous batch) are read back from the stage as rows; bad data restarts the
        chunk typed."""
        return (self.python_function is None and len(self.planned.spec.checkpoint_columns) <= 1
                and self.source_adapter.relays_to(self.target_adapter))

    def _run_relayed(self, tconn: Connection) -> bool:
        """Load the chunk as relayed batches; False if the two connections' text encodings
        differ (then nothing was read and the typed path loads the chunk)."""
        spec, planned = self.planned.spec, self.planned
        sql, params = chunk_select(self.source_adapter, spec.source.query, planned.columns,
                                   planned.window, planned.split_columns, self.chunk,
                                   order_by=spec.keys)
        with tconn.begin():
            stage = self.target_adapter.relay_stage(tconn, spec.target, planned.columns)
        with self.source.connect().execution_options(**READ_ONLY) as sconn:
            source_encoding = sconn.connection.dbapi_connection.encoding
            if source_encoding != tconn.connection.dbapi_connection.encoding:
                return False
            relay = self.source_adapter.relay(sconn, sql, params, spec.batch_rows)
            try:
                for lines in relay:
                    self._record_previous()
                    self._load_relayed(tconn, stage, lines)
            finally:
                if not relay.finished:
                    relay.close()
                    sconn.invalidate()  # its COPY was cut short
        return True

    def _load_relayed(self, tconn: Connection, stage: str, lines: bytes) -> None:
        """COPY one batch of lines into the relay stage and apply it, if it is the common
        case: no NULL key, no key twice, its first key not continued from the previous batch.
        Otherwise read it back as rows and load those like a typed batch."""
        spec, planned, adapter = self.planned.spec, self.planned, self.target_adapter
        checkpoint = spec.checkpoint_columns[0] if spec.checkpoint_columns else None
        rows: list[tuple] | None = None
        try:
            with tconn.begin():
                adapter.load_relayed(tconn, stage, planned.columns, lines)
                shape = adapter.relayed_shape(tconn, stage, spec.keys, checkpoint)
                continued = self._key_of(shape.first_key) in self.winners
                if shape.null_keys or shape.distinct_keys < shape.rows or continued:
                    rows = adapter.relayed_rows(tconn, stage, planned.columns)
                else:
                    counts = self._apply(tconn, shape.rows, has_null_keys=False, stage=stage)
        except Exception as exc:
            if is_data_error(exc):
                raise RelayRefused(describe_db_error(exc)) from exc
            raise
        if rows is not None:
            self._ensure_stage(tconn)
            self._load_batch(tconn, rows)
            return
        self.winners = {self._key_of(shape.last_key): rank(shape.last_checkpoint)}
        self._record(shape.rows, counts, [], 0, shape.max_checkpoint)

    def _restart_typed(self) -> None:
        """Start the chunk over on the typed path, which can bisect a batch to isolate bad
        rows. The batches relayed so far are this run's writes: loaded again as a replay,
        they are found unchanged and counted as the relay counted them."""
        self.result.counts = ChunkCounts()
        self.result.max_checkpoint = None
        self.winners = {}
        self.replay = True
        self.unrecorded = None
        store.restart_chunk(self.metadata, self.planned.run_id, self.chunk.chunk_no)

    def _load_batch(self, tconn: Connection, rows: list[tuple]) -> None:
        """Load one batch (typed rows) in one transaction."""
        rows, values = self._in_window(rows)
        fresh, repeat, dropped = self._resolve_duplicates(rows, values)
        with tconn.begin():
            counts, bad = self._apply_slice(tconn, fresh) if fresh else (ApplyCounts(), [])
            repeat_bad = self._apply_slice(tconn, repeat, repeat=True)[1] if repeat else []
        bad += repeat_bad
        for row, _ in bad:
            self.winners[self._key(row)] = _ERRORED
        bad_ids = {id(row) for row, _ in bad}
        good_max = max_value([v for row, v in zip(rows, values) if id(row) not in bad_ids])
        self._record(len(rows), counts, bad, dropped + len(repeat) - len(repeat_bad), good_max)

    def _record(self, rows_read: int, counts: ApplyCounts, bad: list, duplicate: int,
                batch_max: Value) -> None:
        """Add a committed batch to the chunk's result; chunk_log gets it from
        ``_record_previous`` or with the chunk's end (one metadata write fewer per chunk)."""
        result = self.result
        result.max_checkpoint = max_value([result.max_checkpoint, batch_max])
        result.counts.rows_read += rows_read
        result.counts.inserted += counts.inserted
        result.counts.changed += counts.changed
        result.counts.unchanged += counts.unchanged
        result.counts.errored += len(bad)
        result.counts.duplicate += duplicate
        self.unrecorded = RecordedBatch(
            BatchProgress(rows_read, counts.inserted, counts.changed, counts.unchanged, len(bad),
                          duplicate),
            encode_value(result.max_checkpoint), [self._error_row(row, msg) for row, msg in bad])

    def _record_previous(self) -> None:
        """Before the next batch: record the previous one (progress, heartbeat) and stop
        here if the run has a stop request (begin_chunk checked before the first batch)."""
        batch, self.unrecorded = self.unrecorded, None
        if batch is not None and store.record_batch(self.metadata, self.planned.run_id,
                                                    self.chunk.chunk_no, batch):
            raise StopRequested()

    def _in_window(self, rows: list[tuple]) -> tuple[list[tuple], list[Value]]:
        """The batch's rows in the run's window and each one's checkpoint value: the KEY
        column(s), or for PYTHON the function's value (rows it puts outside the window are
        skipped here, as SQL skips them for KEY)."""
        if self.python_function is not None:
            columns, function, keep = self.planned.columns, self.python_function, \
                self.python_filter.keeps
            kept, values = [], []
            for row in rows:
                value = function(dict(zip(columns, row)))
                if keep(value):
                    kept.append(row)
                    values.append(value)
            return kept, values
        positions = self.checkpoint_positions
        if not positions:
            return rows, [None] * len(rows)
        if len(positions) == 1:
            p = positions[0]
            return rows, [row[p] for row in rows]
        return rows, [tuple(row[p] for p in positions) for row in rows]

    def _key(self, row: tuple) -> Any:
        return self._key_of(tuple(row[p] for p in self.key_positions))

    @staticmethod
    def _key_of(parts: tuple) -> Any:
        """A business key as a dict key: the value of a one-column key, else the tuple."""
        key = parts[0] if len(parts) == 1 else parts
        try:
            hash(key)
        except TypeError:  # e.g. a JSON key: compare its text
            key = repr(key)
        return key

    def _resolve_duplicates(self, rows: list[tuple], values: list[Value]
                            ) -> tuple[list[tuple], list[tuple], int]:
        """One row per business key: the highest checkpoint value wins, then the last in
        source order. Returns the winners whose key is new to this attempt, the winners of keys
        an earlier batch already wrote (they overwrite that write), and how many rows lost."""
        earlier, current = self.winners, {}  # the previous batch's keys, this batch's
        best: dict[Any, int] = {}  # key -> index of its winning row in this batch
        repeated: set[Any] = set()
        dropped = 0
        for i, row in enumerate(rows):
            key = self._key(row)
            ranked = rank(values[i])
            previous = current.get(key)
            if previous is None:  # the key's first row in this batch
                previous = earlier.get(key)
                if previous is None or previous is _ERRORED:
                    current[key] = ranked
                    best[key] = i
                    continue
                repeated.add(key)  # the previous batch wrote (or dropped a loser of) the key
                current[key] = previous
            try:
                loses = ranked < previous
            except TypeError:  # values that do not compare: source order decides
                loses = False
            if loses:
                dropped += 1
                continue
            current[key] = ranked
            if key in best:
                dropped += 1  # the earlier row of this batch is displaced
            best[key] = i
        self.winners = current
        if not repeated and len(best) == len(rows):
            return rows, [], 0
        fresh, repeat = [], []
        for key, i in sorted(best.items(), key=lambda item: item[1]):
            (repeat if key in repeated else fresh).append(rows[i])
        return fresh, repeat, dropped

    def _apply_slice(self, tconn: Connection, rows: list[tuple],
                     repeat: bool = False) -> tuple[ApplyCounts, list]:
        """Stage and apply ``rows`` in a savepoint; on a data error, bisect. Returns the
        counts of what was applied and the (row, message) pairs that were rejected."""
        savepoint = tconn.begin_nested()
        try:
            self.target_adapter.clear_stage(tconn, self.stage)
            self.target_adapter.load_stage(tconn, self.stage, self.planned.columns, rows)
            counts = self._apply(tconn, len(rows), self._has_null_keys(rows), repeat)
            savepoint.commit()
            return counts, []
        except Exception as exc:
            savepoint.rollback()
            if not is_data_error(exc):
                raise
            if len(rows) == 1:
                return ApplyCounts(), [(rows[0], describe_db_error(exc))]
            middle = len(rows) // 2
            left, left_bad = self._apply_slice(tconn, rows[:middle], repeat)
            right, right_bad = self._apply_slice(tconn, rows[middle:], repeat)
            return (ApplyCounts(left.inserted + right.inserted, left.changed + right.changed,
                                left.unchanged + right.unchanged), left_bad + right_bad)

    def _has_null_keys(self, rows: list[tuple]) -> bool:
        return any(row[i] is None for row in rows for i in self.key_positions)

    def _apply(self, conn: Connection, staged_rows: int, has_null_keys: bool,
               repeat: bool = False, stage: str | None = None) -> ApplyCounts:
        """Apply the staged rows. ``repeat``: rows of keys that an earlier batch of this
        attempt wrote (later duplicates that won); they overwrite what this run wrote and are
        counted as duplicates by the caller. On a replay (retry, redelivery, resume) versions
        this run wrote earlier are overwritten the same way, then counted as the earlier
        attempt counted them."""
        spec, planned, adapter = self.planned.spec, self.planned, self.target_adapter
        stage = stage or self.stage
        now = utcnow()
        if repeat or self.replay:
            adapter.replace_own_versions(conn, stage, spec.target, planned.columns,
                                         spec.keys, spec.scd.audit_columns, planned.run_id,
                                         has_null_keys, options=self.scd2,
                                         scd_type=spec.scd.type, now=now)
        if spec.scd.type == 1:
            counts = adapter.apply_scd1(conn, stage, spec.target, planned.columns,
                                        spec.keys, spec.scd.audit_columns, planned.run_id,
                                        now, staged_rows, has_null_keys)
        else:
            counts = adapter.apply_scd2(conn, stage, spec.target, planned.columns,
                                        spec.keys, spec.scd.audit_columns, planned.run_id,
                                        planned.valid_from, staged_rows, has_null_keys,
                                        options=self.scd2)
        if repeat:
            return ApplyCounts()
        if self.replay and counts.unchanged:
            earlier = adapter.count_applied_by_run(
                conn, stage, spec.target, planned.columns, spec.keys, spec.scd.audit_columns,
                spec.scd.type, planned.run_id, planned.valid_from, has_null_keys,
                options=self.scd2)
            counts = ApplyCounts(counts.inserted + earlier.inserted,
                                 counts.changed + earlier.changed,
                                 counts.unchanged + earlier.unchanged)
        return counts

    def _error_row(self, row: tuple, message: str) -> dict[str, Any]:
        columns = self.planned.columns
        data = {c: _json_safe(v) for c, v in zip(columns, row)}
        return {"key": {k: data[k] for k in self.planned.spec.keys}, "row": data,
                "message": message}


def _json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)
