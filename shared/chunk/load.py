"""Loading one chunk: stream its key range from the source in batches and apply each batch
to the target set-based, one transaction per batch.

Per batch: keep the rows in the window (``shared/checkpoint.py``), resolve duplicate
business keys (``duplicates.py``), stage the rows (COPY on PostgreSQL), apply the SCD SQL
(``shared/scd/apply.py``), commit; then record progress in chunk_log. The chunk is read in
business key order and cut into batches that never split a key's rows
(``batches.py``), so every key is resolved, and written once, within one batch;
memory is about one batch whatever the size of the chunk (``rows_per_chunk``). A batch
rejected for its data is bisected until the bad rows are isolated
(``shared/scd/quarantine.py``): the rest is loaded and each bad row is kept in error_row.
Transient errors ask the task for a retry; the loader itself never raises.

Between two PostgreSQL databases a chunk relays COPY text from source to stage without
parsing a value (``shared/dialects/relay.py``); batches that need a closer look are read
back as rows, and a batch refused for its data restarts the chunk on the typed path.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, text

from shared.checkpoint import CheckpointReader
from shared.chunk.batches import (
    KeyContinues,
    LineCutter,
    RowCutter,
    StreamedBatch,
    streamed_batches,
    whole_keys,
)
from shared.chunk.direct import DirectCopy, direct_copy, max_checkpoint, refusal
from shared.chunk.duplicates import NO_KEY, DuplicateResolver, key_of
from shared.chunk.result import ChunkCounts, ChunkResult
from shared.config.settings import Settings
from shared.dialects import adapter_for
from shared.dialects.holds import ValueCheck, no_checkpoint_beyond_range, printed_by_the_source
from shared.dialects.postgres import PostgresAdapter
from shared.dialects.relay import Relay, relay_between
from shared.engines import READ_ONLY, SessionLimits, get_engine, writer_metadata
from shared.errors import (
    FenceLost,
    RelayRefused,
    StopRequested,
    describe_db_error,
    is_data_error,
    is_transient_db_error,
    is_unique_violation,
)
from shared.fence import TargetFence
from shared.lifecycle.finalize import finalize_run
from shared.metadata import store
from shared.metadata.store import BatchProgress, ChunkStartOutcome, RecordedBatch
from shared.retry import chunk_retry_delay_s, retry_allowed
from shared.run.plan import RunPlan
from shared.run.statuses import ChunkStatus
from shared.run.values import Value, encode_value, json_safe, max_value
from shared.run.window import ChunkRange, chunk_select
from shared.scd import apply as scd
from shared.scd.quarantine import bisect
from shared.scd.target import ApplyCounts
from shared.timeutil import utcnow

log = logging.getLogger("chordload.chunk")


class Pass(Enum):
    """How a staged slice meets what this run already wrote."""

    FIRST = "first"  # no version of this run can exist for these keys yet
    # a first pass over a key range where the target had no current row when the attempt
    # began: every staged key is new (a key's rows are staged once, and no other writer
    # touches the range while this attempt holds the fence), so rows are inserted without
    # comparing
    INITIAL = "initial"
    REPLAY = "replay"  # an earlier attempt (retry, redelivery, resume) may have written them:
    # bring those versions to the staged rows and count them as one clean pass would


def load_chunk(
    settings: Settings,
    run_id: str,
    chunk: ChunkRange,
    worker: str,
    task_id: str | None = None,
    retries_done: int = 0,
    failing_since: float | None = None,
) -> ChunkResult:
    """Load one chunk attempt. ``failing_since``: when (epoch seconds) the transient failure
    this attempt retries began, carried from retry to retry so that ``retries.window_s``
    measures the outage, not a count."""
    metadata = writer_metadata(settings)
    start = store.begin_chunk(metadata, run_id, chunk.chunk_no, f"{worker}/{os.getpid()}", task_id)
    if start.outcome is ChunkStartOutcome.SUPERSEDED:
        log.info(
            "run %s chunk %s: task %s belongs to an earlier launch; nothing to do",
            run_id,
            chunk.chunk_no,
            task_id,
        )
        return ChunkResult(chunk.chunk_no, ChunkStatus.REVOKED, error="superseded by a resume")
    if start.outcome is ChunkStartOutcome.ENDED:
        log.info(
            "run %s chunk %s is already %s; this delivery does nothing",
            run_id,
            chunk.chunk_no,
            start.status.value,
        )
        return ChunkResult(chunk.chunk_no, start.status, error=start.message)
    if start.outcome is ChunkStartOutcome.STOPPED:
        if store.open_chunk_count(metadata, run_id) == 0:
            finalize_run(settings, run_id)
        return ChunkResult(chunk.chunk_no, ChunkStatus.STOPPED, error="stop requested")
    plan = run_plan(metadata, run_id, start.launches)
    replay = start.launches > 1 or start.attempts > 1
    started = time.monotonic()
    log.info(
        "run %s chunk %s started (attempt %s): key range (%s, %s]",
        run_id,
        chunk.chunk_no,
        start.attempts,
        chunk.lower,
        chunk.upper,
    )
    result = ChunkResult(chunk.chunk_no, ChunkStatus.RUNNING)
    load: ChunkLoad | None = None
    try:
        load = ChunkLoad(settings, plan, chunk, result, start.attempts, start.launches, replay)
        load.run()
    except FenceLost as exc:
        # Usually a newer attempt owns the chunk: finish_chunk then records nothing and the
        # attempt ends quietly (below). Should chunk_log still name this attempt, the fence
        # was moved under an open chunk (a run launched by a version without fencing): the
        # chunk fails with the reason rather than being relaunched forever.
        result.status = ChunkStatus.FAILED
        result.error = f"this attempt no longer owns the chunk at the target: {exc}"
        load = None
    except StopRequested:
        result.status = ChunkStatus.STOPPED
        result.error = "stopped by request at a batch boundary"
    except Exception as exc:  # noqa: BLE001 - the task must end with a status, not raise
        result.error = describe_db_error(exc)
        retries = plan.spec.retries
        failing_since = failing_since or time.time()
        failing_for_s = time.time() - failing_since
        if is_transient_db_error(exc) and retry_allowed(retries, retries_done, failing_for_s):
            result.retry_in_s = chunk_retry_delay_s(
                retries, retries_done, settings.visibility_timeout_s
            )
            result.failing_since = failing_since
            result.status = ChunkStatus.PENDING
            if not store.retry_chunk(
                metadata,
                run_id,
                chunk.chunk_no,
                f"attempt {retries_done + 1} failed ({result.error}); retry "
                f"{retries_done + 1} in {result.retry_in_s:.1f}s (failing for "
                f"{failing_for_s:.0f} s; retries.max {retries.max}, "
                f"window {retries.window_s:.0f} s)",
                attempt=start.attempts,
            ):
                return _superseded(run_id, chunk, start.attempts, exc)
            log.warning(
                "run %s chunk %s: transient error, retry %d in %.1fs (failing for %.0f s): %s",
                run_id,
                chunk.chunk_no,
                retries_done + 1,
                result.retry_in_s,
                failing_for_s,
                result.error,
            )
            return result
        result.status = ChunkStatus.FAILED
        if is_transient_db_error(exc):
            result.error = (
                f"{result.error} (after {retries_done} retries over {failing_for_s:.0f} s)"
            )
        log.warning("run %s chunk %s failed: %s", run_id, chunk.chunk_no, result.error)
    else:
        result.status = ChunkStatus.SUCCESS
    # The last chunk to end finalizes the run: a stop ends the run at once, and a chord
    # callback that fires early or never is not needed. Chunks ending together take turns on
    # the run's row, so the last one always counts zero open chunks; the count keeps the other
    # chunks from loading the whole run.
    last_batch = load.unrecorded if load is not None else None
    still_open = store.finish_chunk(
        metadata, run_id, chunk.chunk_no, result.status, result.error, last_batch, start.attempts
    )
    if still_open is None:
        return _superseded(run_id, chunk, start.attempts, result.error)
    if still_open == 0:
        finalize_run(settings, run_id)
    log.info(
        "run %s chunk %s ended %s: %d rows read in %.1f s%s%s",
        run_id,
        chunk.chunk_no,
        result.status.value,
        result.counts.rows_read,
        time.monotonic() - started,
        f", {load.direct_rows} COPYed straight into the target"
        if load and load.direct_rows
        else "",
        f" ({result.error})" if result.error else "",
    )
    return result


def _superseded(run_id: str, chunk: ChunkRange, attempt: int, why: object) -> ChunkResult:
    """The end of an attempt that lost its chunk (``shared/fence.py``): it wrote nothing
    after that, and the chunk's status and counts are the owning attempt's."""
    log.warning(
        "run %s chunk %s: attempt %s no longer owns the chunk (%s); it ends without writing",
        run_id,
        chunk.chunk_no,
        attempt,
        why,
    )
    return ChunkResult(chunk.chunk_no, ChunkStatus.REVOKED, error="superseded by a newer attempt")


# (run id, launch) -> what is the same for every chunk of that launch, kept per process
_plan_cache: dict[tuple[str, int], RunPlan] = {}
_refusal_cache: dict[tuple[str, int], str | None] = {}  # why not direct.py (None: direct)
_LAUNCHES_KEPT = 32

K = TypeVar("K")
V = TypeVar("V")


def _per_launch(cache: dict[K, V], key: K, make: Callable[[], V]) -> V:
    """``cache[key]``, made on first use; a process keeps the last few launches' worth."""
    if key not in cache:
        if len(cache) >= _LAUNCHES_KEPT:
            cache.clear()
        cache[key] = make()
    return cache[key]


def run_plan(metadata: Engine, run_id: str, launch: int) -> RunPlan:
    """The run's plan, read and rebuilt once per process and launch: reading the run's row
    and validating its mapping is the same work for each of its chunks."""
    return _per_launch(
        _plan_cache, (run_id, launch), lambda: RunPlan.from_row(store.get_run(metadata, run_id))
    )


class ChunkLoad:
    """One attempt at one chunk: the streaming loop and the per-batch apply."""

    def __init__(
        self,
        settings: Settings,
        plan: RunPlan,
        chunk: ChunkRange,
        result: ChunkResult,
        attempt: int,
        launch: int,
        replay: bool = False,
    ):
        spec = plan.spec
        self.replay = replay  # an earlier attempt of this run may have written these rows
        self.plan = plan
        self.chunk = chunk
        self.result = result
        self.attempt = attempt  # chunk_log's attempt number: this attempt's fence token
        self.launch = launch  # the run's launch (1, and one more per resume)
        self.metadata = writer_metadata(settings)
        self.source = get_engine(settings.connection_url(spec.source.connection))
        limits = settings.target_sessions
        self.target = get_engine(
            settings.connection_url(spec.target.connection),
            limits=SessionLimits(limits.idle_in_transaction_timeout_s, limits.statement_timeout_s),
        )
        self.source_adapter = adapter_for(self.source)
        self.target_adapter = adapter_for(self.target)
        self.fence = TargetFence.of(self.target_adapter, plan, limits.idle_in_transaction_timeout_s)
        self.scd_target = plan.scd_target(self.target_adapter)
        self.key_positions = [plan.columns.index(k) for k in spec.keys]
        self.checkpoint = CheckpointReader(spec, plan.columns, plan.python_filter)
        self.duplicates = DuplicateResolver(self.key_positions, self._text_readers())
        # the last key of the latest relayed batch, as the stage typed it (see _load_relayed)
        self.relayed_last_key: tuple | None = None
        self.stage = ""
        self.value_check = ValueCheck.none(plan.columns)  # set with the stage
        # the latest committed batch, recorded when the next one is read (with the stop
        # check) or, for the chunk's last batch, with the chunk's end
        self.unrecorded: RecordedBatch | None = None
        # the key range had no current target row when this first pass began (Pass.INITIAL)
        self.initial = False
        self.direct_rows = 0  # rows of this attempt COPYed straight into the target (direct.py)
        # the checkpoint maximum of the direct rows, read in the last batch's transaction
        self.direct_max: tuple[Any] | None = None

    def run(self) -> None:
        with self.target.connect() as tconn:
            try:
                with tconn.begin():
                    if not self.fence.enter(
                        tconn, self.plan.run_id, self.chunk.chunk_no, self.attempt
                    ):
                        raise FenceLost("the target's fence names a newer attempt or run")
                    self.initial = not self.replay and not self._range_has_current_rows(tconn)
                relay = self._relay()
                if relay is not None:
                    try:
                        if self._run_relayed(tconn, relay):
                            return
                    except RelayRefused as exc:
                        log.info(
                            "run %s chunk %s: %s; loading it again typed, to isolate the bad rows",
                            self.plan.run_id,
                            self.chunk.chunk_no,
                            exc,
                        )
                        self._restart_typed()
                self._run_typed(tconn)
            finally:
                if tconn.in_transaction():
                    tconn.rollback()
                if self.stage:
                    with tconn.begin():
                        self.target_adapter.release_stage(tconn, self.stage)

    def _range_has_current_rows(self, tconn: Connection) -> bool:
        """Whether the target holds a current row in this chunk's key range (one probe of
        the key index): if not, a first pass inserts without comparing (``Pass.INITIAL``)."""
        adapter = self.target_adapter
        range_sql, params = self.chunk.predicate(adapter, self.plan.split_columns)
        current = adapter.q(self.plan.spec.scd.audit_columns.is_current)
        where = f"{range_sql} AND src.{current} = :cl_true" if self.scd_target.scd2 else range_sql
        sql = f"SELECT 1 FROM {self.scd_target.table} src WHERE {where}"
        split = self.plan.split_columns
        if split == self.plan.spec.keys[: len(split)]:
            # Ordered by the key index's leading columns, the probe reads that index from the
            # range's start. Unordered, PostgreSQL's LIMIT 1 plan was a sequential scan until
            # the first match: of the whole target for an empty range (up to 0.17 s a chunk).
            sql += " ORDER BY " + ", ".join(f"src.{adapter.q(c)}" for c in split)
        sql = adapter.limit_sql(sql, 1)
        found = tconn.execute(text(sql), {**params, "cl_true": adapter.bool_value(True)})
        return found.first() is not None

    def _chunk_sql(
        self, as_text: Sequence[str] = (), extra: Sequence[str] = ()
    ) -> tuple[str, dict[str, Any]]:
        spec = self.plan.spec
        return chunk_select(
            self.source_adapter,
            spec.source.query,
            self.plan.columns,
            self.plan.window,
            self.plan.split_columns,
            self.chunk,
            order_by=spec.keys,
            as_text=as_text,
            extra=extra,
        )

    def _text_columns(self) -> list[str]:
        """Columns the typed path can read as the source's text: between databases whose
        text the target parses exactly (those that relay), all but the key and checkpoint
        columns the loader compares as values. Otherwise (a PYTHON checkpoint function sees
        every column as a value; other targets) values are read typed, exactly as the source
        adapter can (PostgreSQL: arrays, intervals, json as its text, infinity and BC dates
        with their text, shared/dialects/exact.py)."""
        if self.checkpoint.computed or not self.source_adapter.relays_to(self.target_adapter):
            return []
        compared = {*self.plan.spec.keys, *self.plan.spec.checkpoint_columns}
        return [c for c in self.plan.columns if c not in compared]

    def _text_readers(self) -> dict[int, Callable[[Any], Any]]:
        """Per position of a column the chunk receives as the source's text (the typed path
        and the relay's slow path between two PostgreSQL databases), how to read it back
        as its value, so duplicates compare values as on every other path."""
        kinds, columns = self.plan.kinds, self.plan.columns
        if kinds is None:  # planned before the kinds were kept
            return {}
        readers = {}
        for name in self._text_columns():
            i = columns.index(name)
            if (reader := self.source_adapter.text_reader(kinds[i])) is not None:
                readers[i] = reader
        return readers

    def _ensure_stage(self, tconn: Connection) -> None:
        """The stage typed batches load through, made on first use (a relayed chunk may
        never need it)."""
        if not self.stage:
            spec, columns = self.plan.spec, self.plan.columns
            with tconn.begin():
                self.stage = self.target_adapter.chunk_stage(tconn, spec.target, columns)
                self.value_check = (
                    self.target_adapter.value_check(tconn, spec.target, columns)
                    .add(spec.checkpoint_columns, no_checkpoint_beyond_range())
                    .add(self._text_columns(), printed_by_the_source())
                )

    def _run_typed(self, tconn: Connection) -> None:
        """Read the chunk as Python rows and load them batch by batch."""
        self._ensure_stage(tconn)
        sql, params = self._chunk_sql(self._text_columns())
        batch_rows = self.plan.spec.batch_rows
        with self.source.connect().execution_options(**READ_ONLY) as sconn:
            stream = (
                list(rows) for rows in self.source_adapter.stream(sconn, sql, params, batch_rows)
            )
            for rows, whole in whole_keys(stream, RowCutter(self.duplicates.key), batch_rows):
                self._record_previous()
                self._load_batch(tconn, rows, whole)

    # -- relayed: COPY text from source to stage (shared/dialects/relay.py) -----------------
    def _relay(self) -> Relay | None:
        """The relay between the chunk's databases, if the loader needs no value of a row in
        Python (no PYTHON checkpoint function; one checkpoint column at most, whose maximum
        SQL takes)."""
        if self.checkpoint.computed or len(self.plan.spec.checkpoint_columns) > 1:
            return None
        return relay_between(self.source_adapter, self.target_adapter)

    def _run_relayed(self, tconn: Connection, relay: Relay) -> bool:
        """Load the chunk as relayed batches; False if the two connections' text encodings
        differ (then nothing was read and the typed path loads the chunk)."""
        spec, plan = self.plan.spec, self.plan
        sql, params = self._chunk_sql()
        stage = ""  # made on first use: batches COPYed straight into the target need none
        with self.source.connect().execution_options(**READ_ONLY) as sconn:
            if not relay.same_encoding(sconn, tconn):
                return False
            direct = self._direct_copy(sconn, tconn, sql, params)
            if direct is not None:
                sql, params = self._chunk_sql(extra=direct.extra)
                params = {**params, **direct.params}
            stream = relay.source.relay(sconn, sql, params)
            cutter = LineCutter(self.key_positions)
            try:
                for batch in streamed_batches(stream.pieces(), cutter, spec.batch_rows):
                    self._record_previous()
                    if direct is not None and self._load_direct(tconn, direct, batch):
                        continue
                    lines = batch.lines()
                    if direct is not None:
                        lines = direct.strip(lines)
                    if not stage:
                        with tconn.begin():
                            stage = relay.target.relay_stage(tconn, spec.target, plan.columns)
                    self._load_relayed(tconn, relay, stage, lines, batch.whole, direct is not None)
            finally:
                if not stream.finished:
                    stream.close()
                    sconn.invalidate()  # its COPY was cut short
        if self.direct_rows:
            self._add_direct_max(tconn)
        return True

    # -- initial batches COPYed straight into the target (direct.py) -------------------------
    def _direct_copy(
        self, sconn: Connection, tconn: Connection, sql: str, params: dict[str, Any]
    ) -> DirectCopy | None:
        """How this initial pass's batches go straight into the target, or None; whether
        they can is asked once per launch (the answer is the same for every chunk)."""
        if not self.initial:
            return None

        def ask() -> str | None:
            with tconn.begin():
                why = refusal(self.plan, self.scd_target, sconn, tconn, sql, params)
            if why:
                log.info("run %s: initial batches take the stage: %s", self.plan.run_id, why)
            return why

        if _per_launch(_refusal_cache, (self.plan.run_id, self.launch), ask):
            return None
        return direct_copy(self.plan, self.scd_target)

    def _load_direct(self, tconn: Connection, direct: DirectCopy, batch: StreamedBatch) -> bool:
        """COPY one initial batch straight into the target while the source still prints
        it; False, with nothing written, if the batch must take the stage: its first key
        continues from the previous batch or its last key into the next one, or the target
        refused it (a key twice, a key already current, a value a constraint refuses)."""
        if self.replay or self.duplicates.pending is not None:
            return False
        table, target = self.scd_target.table, self.target_adapter
        assert isinstance(target, PostgresAdapter)  # refusal() lets only PostgreSQL through
        try:
            with tconn.begin():
                self._hold_fence(tconn)
                target.prepare_apply(tconn, table, self.plan.spec.keys)
                target.copy_lines(tconn, table, direct.columns, batch)
                if batch.last and self.plan.spec.checkpoint_columns:
                    # no batch follows: the chunk's maximum, read before the commit
                    self.direct_max = self._read_direct_max(tconn)
        except Exception as exc:
            if batch.failure is not None and not isinstance(batch.failure, KeyContinues):
                raise batch.failure from exc  # the source's error, which the COPY only relayed
            if not (
                isinstance(batch.failure, KeyContinues)
                or is_unique_violation(exc)
                or is_data_error(exc)
            ):
                raise
            log.debug(
                "run %s chunk %s: a batch goes through the stage (%s)",
                self.plan.run_id,
                self.chunk.chunk_no,
                batch.failure or describe_db_error(exc),
            )
            return False
        self.direct_rows += batch.rows
        self.relayed_last_key = None  # the unique index sees a key continuing, not this check
        self._record(batch.rows, ApplyCounts(inserted=batch.rows), [], 0, None)
        return True

    def _read_direct_max(self, tconn: Connection) -> tuple[Any]:
        """The checkpoint maximum of the chunk's rows in the target, read in the caller's
        transaction (a tuple: the maximum may be NULL)."""
        column = self.plan.spec.checkpoint_columns[0]
        return (max_checkpoint(tconn, self.plan, self.scd_target, self.chunk, column),)

    def _add_direct_max(self, tconn: Connection) -> None:
        """The chunk's checkpoint maximum, which the direct batches did not see, read back
        from the target; put into the result and the last batch's record. Read in the last
        batch's transaction when that batch went straight in (its rows are the reader's own
        there, and two round trips are saved), else here in a transaction of its own."""
        if not self.plan.spec.checkpoint_columns:
            return
        if self.direct_max is None:
            with tconn.begin():
                self.direct_max = self._read_direct_max(tconn)
        found = self.direct_max[0]
        self.result.max_checkpoint = max_value([self.result.max_checkpoint, found])
        if self.unrecorded is not None:
            self.unrecorded = replace(
                self.unrecorded, max_checkpoint=encode_value(self.result.max_checkpoint)
            )

    def _load_relayed(
        self,
        tconn: Connection,
        relay: Relay,
        stage: str,
        lines: bytes,
        whole: bool,
        after_direct: bool = False,
    ) -> None:
        """COPY one batch of lines into the relay stage and apply it, if it is the common
        case: no NULL key, no key twice, no key held back from the previous batch or
        continuing into the next. Otherwise read it back as rows and load those like a typed
        batch.

        The batches are cut on the keys' text (``LineCutter``); should the database still
        find a key continuing from the previous batch (text that differs for one value), the
        chunk starts over on the typed path, which groups the rows by their values.
        ``after_direct``: the batches before may have gone straight into the target
        (direct.py), so the target is asked whether a staged key is current already."""
        spec, plan = self.plan.spec, self.plan
        checkpoint = spec.checkpoint_columns[0] if spec.checkpoint_columns else None
        rows: list[tuple] | None = None
        try:
            with tconn.begin():
                self._hold_fence(tconn)
                relay.target.load_relayed(tconn, stage, plan.columns, lines)
                shape = relay.target.relayed_shape(tconn, stage, spec.keys, checkpoint)
                if self.relayed_last_key is not None and self._same_key(
                    shape.first_key, self.relayed_last_key
                ):
                    raise RelayRefused(
                        f"key {shape.first_key!r} continues from the previous relayed batch"
                    )
                if (
                    after_direct
                    and self._pass() is Pass.INITIAL
                    and scd.staged_keys_current(tconn, self.scd_target, stage)
                ):
                    raise RelayRefused("a key of the batch already has a current row")
                self.relayed_last_key = shape.last_key if whole else None
                plain = not shape.null_keys and shape.distinct_keys == shape.rows
                if not (plain and whole and self.duplicates.pending is None):
                    rows = relay.target.relayed_rows(
                        tconn, stage, plan.columns, [*spec.keys, *spec.checkpoint_columns]
                    )
                else:
                    counts = self._apply(tconn, stage, shape.rows, False, self._pass())
        except (RelayRefused, FenceLost):
            raise
        except Exception as exc:
            if is_data_error(exc):
                raise RelayRefused(describe_db_error(exc)) from exc
            raise
        if rows is not None:
            self._ensure_stage(tconn)
            self._load_batch(tconn, rows, whole)
            return
        self._record(shape.rows, counts, [], 0, shape.max_checkpoint)

    @staticmethod
    def _same_key(a: tuple, b: tuple) -> bool:
        return bool(key_of(a) == key_of(b))

    def _restart_typed(self) -> None:
        """Start the chunk over on the typed path, which can bisect a batch to isolate bad
        rows. The batches relayed so far are this run's writes: loaded again as a replay,
        they are found unchanged and counted as the relay counted them."""
        self.result.counts = ChunkCounts()
        self.result.max_checkpoint = None
        self.duplicates.reset()
        self.relayed_last_key = None
        self.replay = True
        self.unrecorded = None
        store.restart_chunk(self.metadata, self.plan.run_id, self.chunk.chunk_no, self.attempt)

    # -- one typed batch ----------------------------------------------------------------------
    def _pass(self) -> Pass:
        if self.replay:
            return Pass.REPLAY
        return Pass.INITIAL if self.initial else Pass.FIRST

    def _load_batch(self, tconn: Connection, batch: list[tuple], whole: bool = True) -> None:
        """Load one batch (typed rows) in one transaction. ``whole`` False: the batch's last
        key continues in the next batch, so its rows are only resolved, not written yet."""
        hold = NO_KEY if whole or not batch else self.duplicates.key(batch[-1])
        rows, values = self.checkpoint.in_window(batch)
        resolved = self.duplicates.resolve(rows, values, hold)
        winners = resolved.rows
        if winners:
            with tconn.begin():
                self._hold_fence(tconn)
                counts, bad = self._apply_slice(tconn, winners, self._pass())
        else:
            counts, bad = ApplyCounts(), []
        bad_ids = {id(row) for row, _ in bad}
        good_max = max_value(
            [v for row, v in zip(winners, resolved.values) if id(row) not in bad_ids]
            + [resolved.dropped_max]
        )
        self._record(resolved.read, counts, bad, resolved.dropped, good_max)

    def _hold_fence(self, tconn: Connection) -> None:
        """First in every batch transaction: this attempt must still own the chunk."""
        if not self.fence.hold(tconn, self.plan.run_id, self.chunk.chunk_no, self.attempt):
            raise FenceLost("a newer attempt, the run's end or a newer run moved the fence")

    def _apply_slice(
        self, tconn: Connection, rows: list[tuple], how: Pass
    ) -> tuple[ApplyCounts, list[tuple[tuple, str]]]:
        """Stage and apply ``rows`` in a savepoint, bisecting around rows the target
        rejects for their data. Rows with a value the target cannot hold as it is are
        rejected before staging (``value_check``: a database may round or clamp silently).
        Returns the counts of what was applied and the (row, message) pairs that were
        rejected."""
        adapter, columns = self.target_adapter, self.plan.columns
        rows, refused = self.value_check.split(rows)
        if not rows:
            return ApplyCounts(), refused

        def attempt(part: Sequence[tuple]) -> ApplyCounts:
            adapter.clear_stage(tconn, self.stage)
            adapter.load_stage(tconn, self.stage, columns, part)
            return self._apply(tconn, self.stage, len(part), self._has_null_keys(part), how)

        counts, bad = bisect(tconn, rows, attempt, ApplyCounts.__add__, ApplyCounts())
        return counts, refused + bad

    def _has_null_keys(self, rows: Sequence[tuple]) -> bool:
        return any(row[i] is None for row in rows for i in self.key_positions)

    def _apply(
        self, conn: Connection, stage: str, staged_rows: int, has_null_keys: bool, how: Pass
    ) -> ApplyCounts:
        """Apply the staged rows. A REPLAY first brings the versions an earlier attempt of
        this run wrote for these keys to the staged rows (``replace_own_versions``) and counts
        them, before the apply, as that attempt's inserts and changes: the apply then finds
        them unchanged, and what it writes itself it counts itself."""
        target, plan = self.scd_target, self.plan
        now = utcnow()
        earlier = ApplyCounts()
        if how is Pass.INITIAL:
            return scd.insert_new(
                conn, target, stage, staged_rows, valid_from=plan.valid_from, now=now
            )
        if how is Pass.REPLAY:
            scd.replace_own_versions(conn, target, stage, has_null_keys, now=now)
            earlier = scd.count_applied_by_run(conn, target, stage, has_null_keys, plan.valid_from)
        counts = scd.apply(
            conn, target, stage, staged_rows, has_null_keys, valid_from=plan.valid_from, now=now
        )
        return counts + earlier

    # -- progress -------------------------------------------------------------------------------
    def _record(
        self,
        rows_read: int,
        counts: ApplyCounts,
        bad: list[tuple[tuple, str]],
        duplicate: int,
        batch_max: Value,
    ) -> None:
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
            BatchProgress(
                rows_read, counts.inserted, counts.changed, counts.unchanged, len(bad), duplicate
            ),
            encode_value(result.max_checkpoint),
            [self._error_row(row, msg) for row, msg in bad],
        )

    def _record_previous(self) -> None:
        """Before the next batch: record the previous one (progress, heartbeat) and stop
        here if the run has a stop request (begin_chunk checked before the first batch)."""
        batch, self.unrecorded = self.unrecorded, None
        if batch is not None and store.record_batch(
            self.metadata, self.plan.run_id, self.chunk.chunk_no, batch, self.attempt
        ):
            raise StopRequested()

    def _error_row(self, row: tuple, message: str) -> dict[str, Any]:
        data = {c: json_safe(v) for c, v in zip(self.plan.columns, row)}
        return {"key": {k: data[k] for k in self.plan.spec.keys}, "row": data, "message": message}
