"""``chordload flower``: Flower, safe from any directory.

``celery -A workers flower`` started outside the repository finds no ``flowerconfig.py``:
Flower then answers without a password on every interface. This command refuses to start
without credentials (``FLOWER_BASIC_AUTH``, or OAuth through ``FLOWER_AUTH``), passes
Flower the configuration shipped in the package and binds 127.0.0.1 unless told otherwise.
It then becomes Flower (exec), so signals and exit codes are Flower's own."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

from shared.errors import ConfigError

CONF = Path(__file__).with_name("flowerconfig.py")


def credentials_or_refuse(env: dict[str, str]) -> None:
    basic = [c.strip() for c in env.get("FLOWER_BASIC_AUTH", "").split(",") if c.strip()]
    if not basic and not env.get("FLOWER_AUTH"):
        raise ConfigError(
            "Flower needs credentials and none are set: start it as "
            "`FLOWER_BASIC_AUTH=user:password chordload flower` (or set FLOWER_AUTH for "
            "OAuth); Flower's API can revoke tasks and shut workers down"
        )
    if any(":" not in c for c in basic):
        raise ConfigError(
            "FLOWER_BASIC_AUTH must be user:password (several: user:password,user2:password2)"
        )


def exec_flower(config_file: Path | None, address: str, port: int) -> NoReturn:
    """Replace this process with Flower on ``address:port`` (checked credentials first)."""
    env = dict(os.environ)
    credentials_or_refuse(env)
    if config_file is not None:  # Flower's app (workers) reads the same config as this CLI
        env["CHORDLOAD_CONFIG"] = str(config_file.resolve())
    env["FLOWER_ADDRESS"], env["FLOWER_PORT"] = address, str(port)
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers",
        "flower",
        f"--conf={CONF}",
        f"--address={address}",
        f"--port={port}",
    ]
    sys.stdout.flush()
    os.execve(sys.executable, argv, env)
