"""Running the real ``chordload`` CLI from tests: in-process (``coordinator.cli.main``) or as a
``chordload`` subprocess, with config files written from the session's config."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import yaml
from sqlalchemy import inspect, text

from coordinator.cli import main
from shared.config.settings import ENV_OVERRIDES
from shared.engines import get_engine

CHORDLOAD = Path(sys.executable).parent / "chordload"
REPO = Path(__file__).resolve().parent.parent
CONFIG_ENV = ("CHORDLOAD_CONFIG", *ENV_OVERRIDES)


class CliResult(NamedTuple):
    code: int
    out: str
    err: str


def write_config(
    path: Path,
    base_config: dict[str, Any],
    mappings: dict[str, Any] | None = None,
    **overrides: Any,
) -> Path:
    config = {**base_config, **overrides}
    if mappings is not None:
        config["mappings"] = mappings
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> CliResult:
    """``chordload ARGV`` in this process; argparse's own errors (SystemExit) become a code."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 2
    out, err = capsys.readouterr()
    return CliResult(code, out, err)


def run_subprocess(
    *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout_s: float = 120
) -> CliResult:
    """``chordload ARGV`` as its own process (the installed console script)."""
    base = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
    proc = subprocess.run(
        [str(CHORDLOAD), *[str(a) for a in argv]],
        cwd=cwd or REPO,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def clean_cli_env(monkeypatch, session_settings, tmp_path) -> Iterator[Path]:
    """No config env vars, cwd in an empty tmp dir."""
    for name in CONFIG_ENV:  # set first so monkeypatch restores the original state
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    yield workdir


def process_log_count(metadata_url: str, mapref: str) -> int:
    with get_engine(metadata_url).connect() as conn:
        return conn.execute(
            text("SELECT count(*) FROM process_log WHERE mapref = :m"), {"m": mapref}
        ).scalar_one()


def table_exists(engine, schema: str | None, table: str) -> bool:
    with engine.connect() as conn:
        return inspect(conn).has_table(table, schema=schema)
