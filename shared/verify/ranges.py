"""Verifying one key range, on a worker: digest both sides, split a differing range until
it is small, then compare its rows key by key.

Each side is a query over the same key ranges and window as the loader's chunks
(``chunk_select``): the source is the mapping's query; the target is its current rows
(SCD2 ``is_current``, without the 'deleted' versions of ``deletes: new_record``; SCD1 every
row) and only the business columns. Both are streamed (server-side cursors) and hashed in
the worker with one canonical row code (``rowcode.py``), so every pairing of databases
compares the same way. Between two PostgreSQL databases the digests are computed by the
databases instead, from the loader's own row hash (``row_hash_expr``: md5 of the row's
text under one fixed session setup), summed as signed 64-bit prefixes: no row crosses the
network for an equal range, and a text that differs where the values do not (a numeric
of another scale) only makes the range be split and compared, where values decide. Equal
counts and digests prove the range equal; otherwise the range
is split on the source's (or, if the target has more rows there, the target's) quantiles
and each part digested again, until a part holds at most ``leaf_rows`` rows, and then both
sides are streamed in key order and matched key by key. Memory stays about one batch while
the two sides list their keys in the same order (numbers and dates always do).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine, text

from shared.config.mapping import DeletesMode
from shared.config.settings import Settings
from shared.dialects import adapter_for
from shared.dialects.base import DialectAdapter
from shared.dialects.postgres import HASH_SESSION, PostgresAdapter
from shared.engines import READ_ONLY, get_engine, writer_metadata
from shared.errors import describe_db_error
from shared.metadata import verifies
from shared.metadata.verifies import DiffRow
from shared.run.values import json_safe
from shared.run.window import ChunkRange, chunk_select
from shared.verify.plan import MAX_DEPTH, SPLIT_PARTS, VerifyPlan
from shared.verify.rowcode import Digest, RowCoder

log = logging.getLogger("chordload.verify")

MISSING, EXTRA, DIFFERENT = "missing", "extra", "different"
FLUSH_DIFFS = 500  # differing keys written to verify_diff per insert
BATCH_ROWS = 5000


@dataclass(frozen=True)
class Side:
    """One side of the comparison: a query returning the business columns."""

    name: str
    engine: Engine
    adapter: DialectAdapter
    query: str

    def connect(self) -> Connection:
        return self.engine.connect().execution_options(**READ_ONLY)


def target_query(adapter: DialectAdapter, plan: VerifyPlan) -> str:
    """The target's rows that stand for the source's: current, not a 'deleted' version."""
    spec = plan.spec
    cols = ", ".join(adapter.q(c) for c in plan.columns)
    sql = f"SELECT {cols} FROM {adapter.table_ref(spec.target)}"
    if spec.scd.type == 2:
        audit = spec.scd.audit_columns
        sql += f" WHERE {adapter.q(audit.is_current)}"
        if spec.scd.deletes is DeletesMode.NEW_RECORD:
            sql += f" AND NOT {adapter.q(audit.is_deleted)}"
    return sql


def sides(settings: Settings, plan: VerifyPlan) -> tuple[Side, Side]:
    spec = plan.spec
    source = get_engine(settings.connection_url(spec.source.connection))
    target = get_engine(settings.connection_url(spec.target.connection))
    source_adapter, target_adapter = adapter_for(source), adapter_for(target)
    return (
        Side("source", source, source_adapter, spec.source.query),
        Side("target", target, target_adapter, target_query(target_adapter, plan)),
    )


@dataclass
class RangeOutcome:
    """What one range task found; the chord's body adds them up."""

    range_no: int
    rows_source: int = 0
    rows_target: int = 0
    missing: int = 0
    extra: int = 0
    different: int = 0
    ranges_compared: int = 0  # (sub)ranges compared key by key
    error: str | None = None
    _pending: list[DiffRow] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "range_no": self.range_no,
            "rows_source": self.rows_source,
            "rows_target": self.rows_target,
            "missing": self.missing,
            "extra": self.extra,
            "different": self.different,
            "ranges_compared": self.ranges_compared,
            "error": self.error,
        }


class RangeVerifier:
    """One range task: digest, split, compare; differing keys go to verify_diff."""

    def __init__(self, settings: Settings, plan: VerifyPlan, range_no: int):
        self.plan = plan
        self.metadata = writer_metadata(settings)
        self.source, self.target = sides(settings, plan)
        self.coder = RowCoder.for_kinds(plan.kinds)
        self.key_positions = [plan.columns.index(k) for k in plan.spec.keys]
        self.outcome = RangeOutcome(range_no)
        # both sides PostgreSQL: digests computed in the databases (compared with each other
        # only; the key-by-key compare always uses the row code)
        self.in_database = all(
            isinstance(s.adapter, PostgresAdapter) for s in (self.source, self.target)
        )

    # -- the SQL of a range on one side ------------------------------------------------------
    def _select(self, side: Side, rng: ChunkRange, ordered: bool) -> tuple[str, dict[str, Any]]:
        spec = self.plan.spec
        return chunk_select(
            side.adapter,
            side.query,
            self.plan.columns,
            self.plan.window,
            spec.split_columns,
            rng,
            order_by=spec.keys if ordered else (),
        )

    def _rows(self, side: Side, rng: ChunkRange, ordered: bool) -> Iterator[tuple]:
        sql, params = self._select(side, rng, ordered)
        with side.connect() as conn:
            for batch in side.adapter.stream(conn, sql, params, BATCH_ROWS):
                yield from batch

    def digest(self, side: Side, rng: ChunkRange) -> Digest:
        if self.in_database:
            return self._database_digest(side, rng)
        digest, codes, hash64 = Digest(), self.coder.codes, self.coder.hash64
        for row in self._rows(side, rng, ordered=False):
            digest.add(hash64(codes(row)))
        return digest

    def digests(self, rng: ChunkRange) -> tuple[Digest, Digest]:
        """Both sides' digests of ``rng``; computed by the databases, both at once (the
        worker only waits), else one after the other (the worker hashes)."""
        if not self.in_database:
            return self.digest(self.source, rng), self.digest(self.target, rng)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="cl-verify") as pool:
            source = pool.submit(self.digest, self.source, rng)
            target = pool.submit(self.digest, self.target, rng)
            return source.result(), target.result()

    def _database_digest(self, side: Side, rng: ChunkRange) -> Digest:
        """The range's count and digest computed by PostgreSQL (both sides are)."""
        sql, params = self._select(side, rng, ordered=False)
        row_hash = side.adapter.row_hash_expr([f"d.{side.adapter.q(c)}" for c in self.plan.columns])
        prefix = f"('x' || substr({row_hash}, 1, 16))::bit(64)::bigint::numeric"
        digest_sql = f"SELECT count(*), coalesce(sum({prefix}), 0) FROM ({sql}) d"
        with side.connect() as conn:
            conn.execute(text(HASH_SESSION))  # the text the row hash is defined on
            rows, total = conn.execute(text(digest_sql), params).one()
        return Digest(int(rows), int(total))

    # -- the range, recursively ------------------------------------------------------------
    def run(self, rng: ChunkRange) -> RangeOutcome:
        verifies.replace_range_diffs(self.metadata, self.plan.verify_id, rng.chunk_no)
        source, target = self.digests(rng)
        self.outcome.rows_source, self.outcome.rows_target = source.rows, target.rows
        self._verify(rng, source, target, depth=0)
        self._flush()
        return self.outcome

    def _verify(self, rng: ChunkRange, source: Digest, target: Digest, depth: int) -> None:
        if source.matches(target):
            return
        larger = max(source.rows, target.rows)
        if larger > self.plan.leaf_rows and depth < MAX_DEPTH:
            side = self.source if source.rows >= target.rows else self.target
            parts = self._split(side, rng, larger)
            if len(parts) > 1:
                for part in parts:
                    self._verify(part, *self.digests(part), depth + 1)
                return
        self._compare(rng)

    def _split(self, side: Side, rng: ChunkRange, rows: int) -> list[ChunkRange]:
        """``rng`` cut at quantiles of ``side``'s split column(s) inside it."""
        spec, adapter = self.plan.spec, side.adapter
        window_sql, params = self.plan.window.predicate(adapter)
        range_sql, range_params = rng.predicate(adapter, spec.split_columns)
        where, params = f"({window_sql}) AND ({range_sql})", {**params, **range_params}
        parts = min(SPLIT_PARTS, max(2, math.ceil(rows / max(1, self.plan.leaf_rows))))
        with side.connect() as conn:
            if len(spec.split_columns) > 1:
                bounds = adapter.offset_boundaries(
                    conn, side.query, where, params, spec.split_columns, parts, rows
                )
            else:
                bounds = adapter.split_boundaries(
                    conn, side.query, where, params, spec.split_column, parts
                )
        bounds = [b for b in bounds if b != rng.upper]
        edges = [rng.lower, *bounds, rng.upper]
        return [
            ChunkRange(rng.chunk_no, edges[i], edges[i + 1], rng.includes_nulls and i == 0)
            for i in range(len(edges) - 1)
        ]

    def _compare(self, rng: ChunkRange) -> None:
        """Both sides in key order, matched key by key. A key waits in ``pending`` until the
        other side brings it (at once when both list keys in the same order)."""
        self.outcome.ranges_compared += 1
        pending: tuple[dict[tuple, tuple], dict[tuple, tuple]] = ({}, {})
        streams = (self._keyed(self.source, rng), self._keyed(self.target, rng))
        for pair in itertools.zip_longest(*streams):
            for side_no, item in enumerate(pair):
                if item is None:
                    continue
                key, entry = item
                other = pending[1 - side_no]
                if key in other:
                    theirs = other.pop(key)
                    source, target = (entry, theirs) if side_no == 0 else (theirs, entry)
                    self._match(source, target)
                else:
                    pending[side_no][key] = entry  # a key twice on one side: the last counts
        for raw_key, _codes in pending[0].values():
            self._diff(DiffRow(MISSING, raw_key))
        explained = self.plan.deletes_explain_extra
        for raw_key, _codes in pending[1].values():
            self._diff(DiffRow(EXTRA, raw_key, explained=explained))

    def _keyed(self, side: Side, rng: ChunkRange) -> Iterator[tuple[tuple, tuple]]:
        """(key codes, (key as JSON, row codes)) per row of ``side`` in ``rng``."""
        keys, columns, codes_of = self.key_positions, self.plan.spec.keys, self.coder.codes
        for row in self._rows(side, rng, ordered=True):
            codes = codes_of(row)
            raw = {c: json_safe(row[i]) for c, i in zip(columns, keys, strict=True)}
            yield tuple(codes[i] for i in keys), (raw, codes)

    def _match(self, source: tuple, target: tuple) -> None:
        raw_key, source_codes = source
        target_codes = target[1]
        if source_codes != target_codes:
            differ = [
                c
                for c, s, t in zip(self.plan.columns, source_codes, target_codes, strict=True)
                if s != t
            ]
            self._diff(DiffRow(DIFFERENT, raw_key, differ))

    # -- differing keys --------------------------------------------------------------------------
    def _diff(self, diff: DiffRow) -> None:
        outcome = self.outcome
        setattr(outcome, diff.kind, getattr(outcome, diff.kind) + 1)
        outcome._pending.append(diff)
        if len(outcome._pending) >= FLUSH_DIFFS:
            self._flush()

    def _flush(self) -> None:
        pending, self.outcome._pending = self.outcome._pending, []
        verifies.add_diffs(self.metadata, self.plan.verify_id, self.outcome.range_no, pending)


_plans: dict[str, VerifyPlan] = {}


def verify_plan(metadata: Engine, verify_id: str) -> VerifyPlan:
    """The verify's plan, read once per process (every range task of it needs the same)."""
    plan = _plans.get(verify_id)
    if plan is None:
        if len(_plans) >= 32:
            _plans.clear()
        row = verifies.get_verify(metadata, verify_id)
        plan = _plans[verify_id] = VerifyPlan.from_document(verify_id, row.mapref, row.plan)
    return plan


def verify_range(settings: Settings, verify_id: str, rng: ChunkRange) -> RangeOutcome:
    """One range task. A failure is the range's outcome (``error``), not an exception: the
    chord's body still runs and ends the verify FAILED, naming the range."""
    try:
        metadata = writer_metadata(settings)
        plan = verify_plan(metadata, verify_id)
        return RangeVerifier(settings, plan, rng.chunk_no).run(rng)
    except Exception as exc:  # noqa: BLE001 - reported as the range's error
        log.warning("verify %s range %s failed: %s", verify_id, rng.chunk_no, exc)
        return RangeOutcome(rng.chunk_no, error=describe_db_error(exc))
