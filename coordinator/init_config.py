"""``chordload init``: a commented starter ``chordload.yaml`` for one source table.

It reads the table's columns and primary key from the source (nothing is written there):
the keys are the primary key, the checkpoint is suggested from a timestamp column (one named
like ``updated_at`` first), the split column is the first key. Passwords never go into the
file: the URL's password becomes a ``${VAR}`` reference. An existing file is never
overwritten."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, NoSuchTableError
from sqlalchemy.types import Date, DateTime

from shared.config.settings import database_url
from shared.engines import get_engine, mask_url
from shared.errors import ConfigError, RefusedError, SourceUnavailableError, describe_db_error

PASSWORD_VAR = "CHORDLOAD_SOURCE_PASSWORD"
# names that usually mean "when the row last changed", best first
CHANGE_COLUMN_NAMES = (
    "updated_at",
    "modified_at",
    "last_modified",
    "last_updated",
    "changed_at",
    "update_time",
    "modified",
    "updated",
)


@dataclass(frozen=True)
class TableShape:
    schema: str | None
    table: str
    columns: list[str]
    primary_key: list[str]
    timestamps: list[str]  # date/timestamp columns, in table order


def _url_without_password(url: str) -> str:
    parsed = make_url(url)
    if parsed.password is None:
        return url
    marker = "CHORDLOADPASSWORDMARKER"
    rendered = parsed.set(password=marker).render_as_string(hide_password=False)
    return rendered.replace(marker, "${" + PASSWORD_VAR + "}")


def read_table(url: str, table: str) -> TableShape:
    schema, _, name = table.rpartition(".")
    engine = get_engine(url)
    try:
        with engine.connect() as conn:
            inspector = inspect(conn)
            columns = inspector.get_columns(name, schema=schema or None)
            pk = inspector.get_pk_constraint(name, schema=schema or None)
    except NoSuchTableError:
        raise ConfigError(
            f"table '{table}' not found in {mask_url(url)}; give --table as table or "
            f"schema.table, spelled as the database stores it"
        ) from None
    except DBAPIError as exc:
        raise SourceUnavailableError(
            f"cannot read table '{table}' from {mask_url(url)}: {describe_db_error(exc)}"
        ) from None
    return TableShape(
        schema or None,
        name,
        [c["name"] for c in columns],
        list(pk.get("constrained_columns") or []),
        [c["name"] for c in columns if isinstance(c["type"], (DateTime, Date))],
    )


def _checkpoint_column(shape: TableShape) -> str | None:
    by_name = {c.lower(): c for c in shape.timestamps}
    for name in CHANGE_COLUMN_NAMES:
        if name in by_name:
            return by_name[name]
    return shape.timestamps[0] if shape.timestamps else None


def _ident(name: str) -> str:
    return name if re.fullmatch(r"[a-z_][a-z0-9_]*", name) else '"' + name.replace('"', '""') + '"'


def _yaml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(url: str, shape: TableShape) -> str:
    mapref = re.sub(r"[^A-Za-z0-9_]", "_", shape.table)
    source_ref = ".".join(_ident(p) for p in (shape.schema, shape.table) if p)
    query = f"SELECT {', '.join(_ident(c) for c in shape.columns)} FROM {source_ref}"
    if shape.primary_key:
        keys = f"[{', '.join(shape.primary_key)}]"
        keys_note = "# the table's primary key"
    else:
        keys = f"[{shape.columns[0]}]"
        keys_note = "# TODO: the table has no primary key; list the columns that identify a row"
    column = _checkpoint_column(shape)
    if column is not None:
        checkpoint = f"{{strategy: KEY, column: {column}}}"
        others = [c for c in shape.timestamps if c != column]
        checkpoint_note = f"# each run reads rows with {column} >= the last run's maximum"
        if others:
            checkpoint_note += f" (other date/time columns: {', '.join(others)})"
    else:
        checkpoint = "{strategy: NONE}"
        checkpoint_note = (
            "# no date/time column found: every run reads the whole table; name a column "
            "that grows with each change to load incrementally"
        )
    return f"""# chordload.yaml written by `chordload init` for {shape.table}. Check it, then:
#   chordload validate && chordload db upgrade && chordload plan {mapref}
# ${{VAR}} values come from the environment when the file is read.

# metadata database (PostgreSQL; SQLite on one machine): runs, chunks, checkpoints
metadata: ${{CHORDLOAD_METADATA_URL}}
broker: redis://127.0.0.1:6379/0
result_backend: redis://127.0.0.1:6379/1

connections:
  source: {_yaml_str(_url_without_password(url))}
  # where the target table goes: set CHORDLOAD_TARGET_URL (a SQLAlchemy URL)
  warehouse: ${{CHORDLOAD_TARGET_URL}}

# notify: {{webhook_url: https://hooks.slack.com/services/...}}  # on FAILED, STOPPED, recovery

mappings:
  {mapref}:
    source:
      connection: source
      query: {_yaml_str(query)}
    target: {{connection: warehouse, table: dim_{mapref}}}  # created on the first run
    keys: {keys}  {keys_note}
    scd: {{type: 2}}  # 2 keeps history (dw_valid_from/dw_valid_to); 1 overwrites in place
    checkpoint: {checkpoint}
    {checkpoint_note}
    chunking: {{rows_per_chunk: 50000, min_rows_for_parallel: 100000}}  # split on the first key
"""


def write_config(url: str, table: str, output: Path) -> str:
    """Write the starter config to ``output`` (refused if it exists); returns the mapref."""
    if output.exists():
        raise RefusedError(
            f"{output} already exists and was left as it is: pass --output PATH for a new "
            f"file, or move it away first"
        )
    if not output.parent.is_dir():
        raise ConfigError(
            f"--output {output}: the directory {output.parent} does not exist; create it or "
            f"write the file elsewhere"
        )
    try:
        database_url(url)
    except ValueError as err:
        raise ConfigError(f"--source-url is {err}") from None
    shape = read_table(url, table)
    text = render(url, shape)
    try:
        with output.open("x") as handle:  # "x": never overwrite, even on a race
            handle.write(text)
    except FileExistsError:
        raise RefusedError(f"{output} already exists and was left as it is") from None
    return re.sub(r"[^A-Za-z0-9_]", "_", shape.table)
