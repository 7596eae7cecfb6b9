"""Settings and mapping specs: every problem names its path, ${VAR} substitution and the
environment overrides (no file is read outside tmp_path, nothing is connected)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.config.mapping import MappingSpec
from shared.config.settings import (
    CONFIG_ENV,
    ENV_ONLY_REQUIRED,
    ENV_OVERRIDES,
    load_settings,
    settings_from_dict,
)
from shared.errors import ConfigError


def mapping(**extra) -> dict:
    return {
        "source": {"connection": "src", "query": "SELECT * FROM t"},
        "target": {"connection": "dst", "table": "w.t"},
        "keys": ["id"],
        **extra,
    }


def config(**mappings) -> dict:
    return {
        "metadata": "sqlite:///meta.db",
        "connections": {"src": "sqlite:///src.db", "dst": "sqlite:///dst.db"},
        "mappings": mappings or {"x": mapping()},
    }


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No chordload variable of the calling shell leaks into these tests."""
    for name in [*ENV_OVERRIDES, CONFIG_ENV]:
        monkeypatch.delenv(name, raising=False)


def error_of(raw, source="config") -> str:
    with pytest.raises(ConfigError) as info:
        settings_from_dict(raw, source)
    return str(info.value)


# -- settings_from_dict -------------------------------------------------------------------------
def test_a_valid_config_loads():
    """A minimal config validates, with the defaults stated on the fields."""
    s = settings_from_dict(config())
    assert s.mapping("x").target.table_name == "t" and s.mapping("x").target.schema_name == "w"
    assert s.celery.queue == "chordload" and s.broker.startswith("redis://")


@pytest.mark.parametrize(
    "edit, where, message",
    [
        (lambda c: c["mappings"]["x"].pop("keys"), "mappings.x.keys", "required key is missing"),
        (lambda c: c["mappings"]["x"].update(keyz=["id"]), "mappings.x.keyz", "unknown key"),
        (lambda c: c["mappings"]["x"].update(keys=[]), "mappings.x.keys", "at least 1 item"),
        (lambda c: c.update(celery={"queu": "q"}), "celery.queu", "unknown key"),
        (
            lambda c: c["mappings"]["x"].update(chunking={"max_chunks": 0}),
            "mappings.x.chunking.max_chunks",
            "greater than or equal to 1",
        ),
        (
            lambda c: c["mappings"]["x"]["source"].update(query="SELECT 1; SELECT 2"),
            "mappings.x.source.query",
            "single SELECT statement",
        ),
        (
            lambda c: c["connections"].update(src="nosuchdb://x"),
            "connections.src",
            "unknown database dialect/driver 'nosuchdb'",
        ),
        (
            lambda c: c.update(metadata="mysql+pymysql://u:pw@h/db"),
            "metadata",
            "must be PostgreSQL (or SQLite on one machine)",
        ),
        (lambda c: c.pop("metadata"), "metadata", "required key is missing"),
    ],
)
def test_errors_name_the_path_of_the_problem(edit, where, message):
    """A config error names the source, the dotted path of the bad key and what is wrong."""
    raw = config()
    edit(raw)
    text = error_of(raw, "my.yaml")
    assert text.startswith("my.yaml is invalid:")
    assert f"  - {where}: " in text and message in text


def test_an_undefined_connection_is_named_with_the_known_ones():
    """An undefined connection names the mapping, the role and the known connections."""
    raw = config(x=mapping(target={"connection": "nope", "table": "t"}))
    text = error_of(raw)
    assert "mapping 'x': target.connection 'nope' is not defined" in text
    assert "(known: dst, src)" in text


def test_a_database_url_error_never_repeats_the_password():
    """A bad URL is reported without the URL itself (it may hold a password)."""
    raw = config()
    raw["connections"]["src"] = "nosuchdb://user:hunter2@host/db"
    assert "hunter2" not in error_of(raw)


def test_a_top_level_that_is_not_a_mapping_is_refused():
    """A file that is a list or a scalar is refused before validation."""
    assert "expected a mapping of keys at the top level" in error_of(["a"], "f.yaml")


def test_unknown_mapping_lists_the_known_ones():
    """Asking for a mapping that is not configured names the ones that are."""
    with pytest.raises(ConfigError, match=r"unknown mapping 'y' \(mappings in the config: x\)"):
        settings_from_dict(config()).mapping("y")


# -- environment overrides ----------------------------------------------------------------------
URL_OVERRIDES = {
    "CHORDLOAD_BROKER_URL": "redis://broker:6379/5",
    "CHORDLOAD_RESULT_BACKEND": "redis://backend:6379/6",
    "CHORDLOAD_METADATA_URL": "sqlite:///other-meta.db",
}


def sample_for(env: str, default) -> tuple[str, object]:
    """A value for ``env`` other than its key's default, as text and as the key's type."""
    if env in URL_OVERRIDES:
        return URL_OVERRIDES[env], URL_OVERRIDES[env]
    if isinstance(default, bool):
        return ("false", False) if default else ("true", True)
    if isinstance(default, int):
        return str(default + 7), default + 7
    if isinstance(default, float):
        return str(default + 0.5), default + 0.5
    return "from-env", "from-env"


def at(node, path):
    for key in path:
        node = getattr(node, key)
    return node


@pytest.mark.parametrize("env", sorted(ENV_OVERRIDES))
def test_each_environment_variable_overrides_its_key(env, monkeypatch):
    """Each ENV_OVERRIDES variable overrides its nested key and leaves its siblings alone."""
    raw = config()
    raw["celery"] = {"queue": "file-q", "heartbeat_grace_s": 11}
    raw["schedule"] = {"grace_s": 999.0, "dispatch_interval_s": 3.0, "reconcile_interval_s": 4.0}
    path = ENV_OVERRIDES[env]
    before = at(settings_from_dict(raw), path)
    value, expected = sample_for(env, before)
    assert expected != before
    monkeypatch.setenv(env, value)
    s = settings_from_dict(raw)
    assert at(s, path) == expected
    assert s.celery.heartbeat_grace_s == 11
    if path != ("celery", "queue"):
        assert s.celery.queue == "file-q"
    if path != ("schedule", "grace_s"):
        assert s.schedule.grace_s == 999.0


def test_an_invalid_override_names_the_variable(monkeypatch):
    """A bad value from the environment is reported at its key, with the variable named."""
    monkeypatch.setenv("CHORDLOAD_VISIBILITY_TIMEOUT_S", "soon")
    text = error_of(config())
    assert "celery.visibility_timeout_s" in text
    assert "(set from the environment: CHORDLOAD_VISIBILITY_TIMEOUT_S)" in text


def test_an_empty_variable_does_not_override(monkeypatch):
    """An empty variable is treated as unset."""
    monkeypatch.setenv("CHORDLOAD_QUEUE", "")
    raw = config()
    raw["celery"] = {"queue": "file-q"}
    assert settings_from_dict(raw).celery.queue == "file-q"


# -- load_settings: files and ${VAR} ------------------------------------------------------------
def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "chordload.yaml"
    path.write_text(text)
    return path


BASE_YAML = """
metadata: ${META_URL:-sqlite:///meta.db}
connections:
  src: sqlite:///src.db
  dst: sqlite:///dst.db
mappings:
  x:
    source: {connection: src, query: "SELECT * FROM ${TABLE}"}
    target: {connection: dst, table: t}
    keys: [id]
"""


def test_variables_and_defaults_are_substituted(tmp_path, monkeypatch):
    """``${VAR}`` takes the variable's value, ``${VAR:-default}`` its default when unset."""
    monkeypatch.setenv("TABLE", "orders")
    monkeypatch.delenv("META_URL", raising=False)
    s = load_settings(write(tmp_path, BASE_YAML))
    assert s.mapping("x").source.query == "SELECT * FROM orders"
    assert s.metadata == "sqlite:///meta.db"
    monkeypatch.setenv("META_URL", "sqlite:///set.db")
    assert load_settings(write(tmp_path, BASE_YAML)).metadata == "sqlite:///set.db"


def test_an_unset_variable_without_default_names_where_it_is_used(tmp_path, monkeypatch):
    """An unset ``${VAR}`` is an error naming the file, the key path and the variable."""
    monkeypatch.delenv("TABLE", raising=False)
    path = write(tmp_path, BASE_YAML)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    text = str(info.value)
    assert f"{path}: mappings.x.source.query: environment variable ${{TABLE}} is not set" in text
    assert "${TABLE:-default}" in text


def test_a_variable_in_a_comment_is_ignored(tmp_path, monkeypatch):
    """``${VAR}`` in a YAML comment is not substituted and needs no value."""
    monkeypatch.setenv("TABLE", "t")
    monkeypatch.delenv("NEVER_SET", raising=False)
    s = load_settings(write(tmp_path, "# uses ${NEVER_SET}\n" + BASE_YAML))
    assert s.mapping("x").source.query == "SELECT * FROM t"


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00;")))
def test_a_value_never_changes_the_files_structure(tmp_path_factory, value):
    """Whatever a ${VAR} holds, it becomes exactly that string, never more keys or another type."""
    path = write(tmp_path_factory.mktemp("cfg"), BASE_YAML)
    old = os.environ.get("TABLE")
    os.environ["TABLE"] = value
    try:
        s = load_settings(path)
    finally:
        if old is None:
            del os.environ["TABLE"]
        else:
            os.environ["TABLE"] = old
    assert s.mapping("x").source.query == ("SELECT * FROM " + value).strip().rstrip(";").strip()
    assert list(s.mappings) == ["x"]


def test_an_overridden_key_needs_no_variable(tmp_path, monkeypatch):
    """A key the environment overrides is dropped before substitution: its ${VAR} may be unset."""
    monkeypatch.setenv("TABLE", "t")
    monkeypatch.delenv("NEVER_SET", raising=False)
    monkeypatch.setenv("CHORDLOAD_QUEUE", "q-env")
    text = BASE_YAML + "celery:\n  queue: ${NEVER_SET}\n  heartbeat_grace_s: 5\n"
    s = load_settings(write(tmp_path, text))
    assert (s.celery.queue, s.celery.heartbeat_grace_s) == ("q-env", 5)


def test_invalid_yaml_is_reported_with_the_file(tmp_path, monkeypatch):
    """YAML that does not parse names the file; placeholders show as the ``${VAR}`` typed."""
    path = write(tmp_path, "metadata: [${X}\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML") as info:
        load_settings(path)
    assert str(path) in str(info.value)
    assert "__chordload_var_" not in str(info.value)


def test_the_config_file_comes_from_the_environment_variable(tmp_path, monkeypatch):
    """Without --config, $CHORDLOAD_CONFIG names the file."""
    monkeypatch.setenv("TABLE", "t")
    monkeypatch.setenv(CONFIG_ENV, str(write(tmp_path, BASE_YAML)))
    monkeypatch.chdir(tmp_path / "..")
    assert list(load_settings().mappings) == ["x"]


def test_a_missing_file_is_refused_with_the_fix(tmp_path, monkeypatch):
    """No file and no environment config: the error names the file and every way to fix it."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings()
    text = str(info.value)
    assert "config file chordload.yaml not found" in text
    assert "--config PATH" in text and CONFIG_ENV in text
    assert all(name in text for name in ENV_ONLY_REQUIRED)


def test_an_explicit_missing_file_is_refused_even_with_the_environment(tmp_path, monkeypatch):
    """--config naming a missing file is an error even when the environment could serve."""
    monkeypatch.setenv("CHORDLOAD_BROKER_URL", "redis://b/0")
    monkeypatch.setenv("CHORDLOAD_METADATA_URL", "sqlite:///m.db")
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.yaml")


def test_the_environment_alone_is_a_config(tmp_path, monkeypatch):
    """With no file, the broker and metadata variables alone make a config (others apply too)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CHORDLOAD_BROKER_URL", "redis://b:1/0")
    monkeypatch.setenv("CHORDLOAD_METADATA_URL", "sqlite:///m.db")
    monkeypatch.setenv("CHORDLOAD_QUEUE", "envq")
    s = load_settings()
    assert (s.broker, s.metadata, s.celery.queue) == ("redis://b:1/0", "sqlite:///m.db", "envq")
    assert s.mappings == {}
    monkeypatch.delenv("CHORDLOAD_METADATA_URL")
    with pytest.raises(ConfigError, match="not found"):
        load_settings()


# -- MappingSpec validation ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "extra, message",
    [
        (
            {"scd": {"deletes": "invalidate"}, "checkpoint": {"strategy": "KEY", "column": "u"}},
            "scd.deletes: invalidate needs full loads (checkpoint strategy NONE)",
        ),
        ({"checkpoint": {"strategy": "PYTHON"}}, "strategy PYTHON needs 'function'"),
        (
            {"checkpoint": {"strategy": "PYTHON", "function": "m:f", "column": "u"}},
            "strategy PYTHON takes no 'column'",
        ),
        (
            {"checkpoint": {"strategy": "PYTHON", "function": "not a path"}},
            'must look like "package.module:function"',
        ),
        ({"checkpoint": {"strategy": "KEY"}}, "strategy KEY needs 'column'"),
        ({"checkpoint": {"strategy": "NONE", "column": "u"}}, "strategy NONE takes no 'column'"),
        ({"checkpoint": {"column": "u", "columns": ["v"]}}, "either 'column' or 'columns'"),
        ({"checkpoint": {"strategy": "KEY", "columns": ["u", "u"]}}, "lists a column twice"),
        ({"checkpoint": {"function": "m:f"}}, "'function' is only used by strategy PYTHON"),
        ({"checkpoint": {"lag": 5}}, "lag needs a checkpoint"),
        ({"keys": ["id", "id"]}, "keys are listed twice"),
        ({"scd": {"type": 1, "tracked": ["a"]}}, "tracked only apply to SCD type 2"),
        ({"scd": {"type": 1, "deletes": "new_record"}}, "deletes: new_record needs SCD type 2"),
        ({"scd": {"current_valid_to": "someday"}}, "'someday' is not an ISO date or timestamp"),
        ({"scd": {"audit_columns": {"valid_to": "dw_valid_from"}}}, "must be distinct names"),
        ({"scd": {"tracked": ["a", "a"]}}, "columns are listed twice"),
        ({"schedule": "61 * * * *"}, "the minute field '61' is invalid"),
        ({"source": {"connection": "s", "query": " ; "}}, "query is empty"),
    ],
)
def test_mapping_spec_errors_say_what_to_fix(extra, message):
    """Each invalid mapping is refused with a message that names the option and the fix."""
    with pytest.raises(ValidationError) as info:
        MappingSpec.model_validate(mapping(**extra))
    assert message in str(info.value)


def test_mapping_spec_resolves_auto_and_split_columns():
    """AUTO resolves by column; offset splits on split column + rest of key; cron normalised."""
    spec = MappingSpec.model_validate(
        mapping(
            keys=["a", "b", "c"],
            checkpoint={"strategy": "AUTO", "columns": ["u", "v"]},
            chunking={"strategy": "offset", "column": "b"},
            schedule="  */5   *  * * * ",
        )
    )
    assert spec.checkpoint_strategy.value == "KEY"
    assert spec.checkpoint_columns == ["u", "v"] and spec.checkpoint_column == "u"
    assert spec.split_column == "b" and spec.split_columns == ["b", "a", "c"]
    assert spec.schedule == "*/5 * * * *"
    auto_none = MappingSpec.model_validate(mapping(checkpoint={"strategy": "AUTO"}))
    assert auto_none.checkpoint_strategy.value == "NONE" and auto_none.checkpoint_columns == []
    quantile = MappingSpec.model_validate(mapping(keys=["a", "b"]))
    assert quantile.split_columns == ["a"]


def test_mapping_spec_survives_its_json_dump():
    """A spec dumped as JSON (how a run stores it) validates back to an equal spec."""
    spec = MappingSpec.model_validate(
        mapping(
            checkpoint={"strategy": "KEY", "columns": ["u", "v"], "lag": 1.5},
            scd={"type": 2, "current_valid_to": "9999-12-31", "tracked": ["a"]},
            chunking={"strategy": "range", "parallelism": 4},
            schedule="0 3 * * 1-5",
        )
    )
    assert (
        MappingSpec.model_validate(yaml.safe_load(yaml.safe_dump(spec.model_dump(mode="json"))))
        == spec
    )


def test_scd_type_true_is_not_read_as_scd1():
    """YAML's `type: true` would be 1 to a lax validator: SCD1 by accident."""
    with pytest.raises(ValidationError) as refused:
        MappingSpec.model_validate(mapping(scd={"type": True}))
    assert "must be 1 or 2, not true" in str(refused.value)
    assert MappingSpec.model_validate(mapping(scd={"type": 1})).scd.type == 1
