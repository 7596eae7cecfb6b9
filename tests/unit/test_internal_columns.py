"""The names chordload's SQL gives its own columns: every one is refused as a source column
(a source column of that name was taken for chordload's: SQLite stored the column's value as
the row hash), and the list stays complete as the SQL changes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from coordinator.plan import check_columns
from shared.config.mapping import MappingSpec
from shared.dialects.base import INTERNAL_COLUMNS
from shared.errors import ConfigError

SHARED = Path(__file__).resolve().parents[2] / "shared"
# cl_ words in the SQL that are not columns: bind parameters and table names (a name that
# ends in "_" is a prefix)
NOT_COLUMNS = {"cl_true", "cl_from", "cl_hi", "cl_hwm", "cl_lo", "cl_stage", "cl_stage_keys"}


def test_every_cl_name_in_the_sql_is_a_known_column_or_not_a_column():
    found = {
        word
        for path in SHARED.rglob("*.py")
        for word in re.findall(r"\bcl_[a-z_]*", path.read_text())
        if not word.endswith("_")
    }
    unknown = found - INTERNAL_COLUMNS - NOT_COLUMNS
    assert not unknown, f"add to INTERNAL_COLUMNS (a column) or NOT_COLUMNS here: {unknown}"
    assert found >= INTERNAL_COLUMNS  # no stale entry


def _spec() -> MappingSpec:
    return MappingSpec.model_validate(
        {
            "source": {"connection": "src", "query": "SELECT * FROM t"},
            "target": {"connection": "dst", "table": "t"},
            "keys": ["id"],
        }
    )


@pytest.mark.parametrize("name", [*sorted(INTERNAL_COLUMNS), "CL_HASH", "Cl_Seq"])
def test_a_source_column_with_such_a_name_is_refused_with_the_fix(name):
    with pytest.raises(ConfigError) as refused:
        check_columns("m", _spec(), ["id", name, "v"])
    message = str(refused.value)
    assert message.startswith(f"mapping 'm': the source returns a column '{name}'")
    assert f"`{name} AS {name}_`" in message


def test_names_that_only_look_alike_load():
    check_columns("m", _spec(), ["id", "cl_hash_", "cl_code", "hash", "seq"])
