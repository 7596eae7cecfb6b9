"""docker-compose.yml without a Docker engine: the file is parsed (PyYAML) and every service's
command - and every health check that calls a project CLI - is resolved against the real
CLIs: ``chordload`` subcommands against ``coordinator.cli.build_parser()``, ``celery -A workers
<command>`` against Celery's click CLI with the project's app (Flower's options against
Flower's). Every ``${VAR}`` the stack uses must be documented in docs/operations.md, and the
config file the stack mounts must load."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
STACK_CONFIG = REPO / "deploy" / "chordload.yaml"
OPERATIONS = REPO / "docs" / "operations.md"
VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")
PROJECT_SERVICES = {"migrate", "worker", "beat", "flower", "ui"}


def interpolate(value: Any, env: dict[str, str] | None = None) -> Any:
    """Compose-style ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` and ``$$``; unset
    required variables get a placeholder."""
    if not isinstance(value, str):
        return value
    env = env or {}

    def repl(match: re.Match[str]) -> str:
        name, op, arg = match.groups()
        if env.get(name):
            return env[name]
        if op in (":-", "-"):
            return arg
        return f"placeholder-{name.lower()}"

    return VAR.sub(repl, value).replace("$$", "$")


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _argv(command: Any) -> list[str]:
    if isinstance(command, str):
        return shlex.split(interpolate(command))
    return [str(interpolate(part)) for part in command]


def project_commands(services) -> list[tuple[str, list[str]]]:
    """(where, argv) of every service command and of health checks calling a project CLI."""
    found = []
    for name, service in services.items():
        if name in PROJECT_SERVICES:
            assert "command" in service, f"{name} has no command"
            found.append((f"{name}.command", _argv(service["command"])))
        test = (service.get("healthcheck") or {}).get("test")
        if test and test[0] in ("CMD", "CMD-SHELL"):
            argv = (
                shlex.split(interpolate(test[1]))
                if test[0] == "CMD-SHELL"
                else [str(interpolate(t)) for t in test[1:]]
            )
            if argv[0] in ("celery", "chordload"):
                found.append((f"{name}.healthcheck", argv))
    return found


def check_chordload(where: str, argv: list[str]) -> None:
    from coordinator.cli import build_parser

    try:
        args = build_parser().parse_args(argv[1:])
    except SystemExit:
        pytest.fail(f"{where}: `{shlex.join(argv)}` is not a valid chordload command")
    assert callable(getattr(args, "func", None)), where


def check_celery(where: str, argv: list[str]) -> None:
    from celery.app.utils import find_app
    from celery.bin.base import CLIContext
    from celery.bin.celery import celery as celery_cli

    assert argv[1:3] == ["-A", "workers"], f"{where}: the app is `-A workers`"
    from workers.celery_app import worker_app

    app = find_app("workers")
    assert app is worker_app(), f"{where}: -A workers resolves to the workers' app"
    app.loader.import_default_modules()
    assert {
        "chordload.load_chunk",
        "chordload.finalize_run",
        "chordload.dispatch_due",
        "chordload.reconcile",
    } <= set(app.tasks)
    name, rest = argv[3], argv[4:]
    parent = click.Context(
        celery_cli,
        info_name="celery",
        obj=CLIContext(app=app, no_color=True, workdir=None, quiet=True),
    )
    command = celery_cli.get_command(parent, name)
    assert command is not None, f"{where}: `celery {name}` does not exist"
    try:
        command.make_context(name, list(rest), parent=parent)
    except click.ClickException as err:
        pytest.fail(f"{where}: `{shlex.join(argv)}`: {err.format_message()}")
    if name == "flower":
        from flower.command import is_flower_option

        bad = [arg for arg in rest if not is_flower_option(arg)]
        assert not bad, f"{where}: not Flower options: {bad}"


def test_every_command_exists_in_the_project_clis(services, config_path, monkeypatch):
    monkeypatch.setenv("CHORDLOAD_CONFIG", str(config_path))  # what `celery -A workers` reads
    commands = project_commands(services)
    seen = {where.split(".")[0] for where, _ in commands}
    assert seen >= PROJECT_SERVICES
    subcommands = set()
    for where, argv in commands:
        if argv[0] == "chordload":
            check_chordload(where, argv)
        elif argv[0] == "celery":
            check_celery(where, argv)
            subcommands.add(argv[3])
        else:
            pytest.fail(f"{where}: `{argv[0]}` is not a project CLI")
    assert {"worker", "beat", "flower", "inspect"} <= subcommands
    assert _argv(services["migrate"]["command"]) == ["chordload", "db", "upgrade"]


def test_services_shape(services):
    assert set(services) == {"postgres", "redis", "migrate", "worker", "beat", "flower", "ui"}
    for name in ("postgres", "redis", "worker", "beat", "flower"):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has a health check"
    redis_cmd = _argv(services["redis"]["command"])
    for flag, value in (("--maxmemory-policy", "noeviction"), ("--appendonly", "yes")):
        assert redis_cmd[redis_cmd.index(flag) + 1] == value
    assert redis_cmd[redis_cmd.index("--requirepass") + 1] == "placeholder-redis_password"
    for name in PROJECT_SERVICES:
        service = services[name]
        assert service.get("build") == "." and (REPO / "Dockerfile").is_file()
        env = {k: interpolate(v) for k, v in service["environment"].items()}
        for var in (
            "CHORDLOAD_CONFIG",
            "CHORDLOAD_BROKER_URL",
            "CHORDLOAD_RESULT_BACKEND",
            "CHORDLOAD_METADATA_URL",
        ):
            assert env.get(var), f"{name}: {var}"
        assert "placeholder-redis_password@redis" in env["CHORDLOAD_BROKER_URL"]
        if name != "migrate":
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["restart"] == "no"
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker, "--scale worker=N"
    worker_cmd = _argv(worker["command"])
    assert worker_cmd[worker_cmd.index("--concurrency") + 1] == "4"
    assert "${CHORDLOAD_WORKER_CONCURRENCY" in COMPOSE.read_text()
    assert services["beat"]["deploy"]["replicas"] == 1
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]
    flower_cmd = _argv(services["flower"]["command"])
    conf = next(a.split("=", 1)[1] for a in flower_cmd if a.startswith("--conf="))
    assert (REPO / conf.removeprefix("/app/")).is_file(), "the image copies the repo to /app"
    assert "COPY . /app" in (REPO / "Dockerfile").read_text()
    for name in ("flower", "redis", "postgres"):  # published on the host's loopback by default
        assert all(interpolate(p).startswith("127.0.0.1:") for p in services[name]["ports"])


def test_every_variable_is_documented():
    used = set()
    for path in (COMPOSE, STACK_CONFIG):
        used |= {m.group(1) for m in VAR.finditer(path.read_text())}
    example = REPO / ".env.example"
    used |= {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in example.read_text().splitlines()
        if re.match(r"^#?\s*[A-Z_][A-Z0-9_]*=", line)
    }
    docs = OPERATIONS.read_text()
    missing = sorted(v for v in used if f"`{v}`" not in docs)
    assert not missing, f"not documented in docs/operations.md: {missing}"
    assert {
        "REDIS_PASSWORD",
        "POSTGRES_PASSWORD",
        "FLOWER_BASIC_AUTH",
        "CHORDLOAD_WORKER_CONCURRENCY",
    } <= used


def test_the_stack_config_loads(services, monkeypatch):
    from shared.config.settings import load_settings

    env = {k: interpolate(v) for k, v in services["worker"]["environment"].items()}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(STACK_CONFIG)
    worker_cmd = _argv(services["worker"]["command"])
    assert settings.celery.queue == worker_cmd[worker_cmd.index("--queues") + 1]
    assert settings.metadata == env["CHORDLOAD_METADATA_URL"]
    demo = settings.mapping("demo_customers")
    assert demo.schedule == "*/15 * * * *" and demo.enabled
    assert settings.connection_url(demo.source.connection) == env["CHORDLOAD_WAREHOUSE_URL"]
