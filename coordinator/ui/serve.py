"""Serving the dashboard with uvicorn: ``chordload ui`` in the foreground, or a server in a
thread of this process (tests, the benchmark) that stops when asked."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from coordinator.ui.app import create_app
from coordinator.ui.security import Credentials
from shared.config.settings import Settings

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8089


def serve(settings: Settings, credentials: Credentials, host: str, port: int) -> None:
    uvicorn.run(
        create_app(settings, credentials),
        host=host,
        port=port,
        log_level="info",
        server_header=False,
        proxy_headers=False,
    )


@contextmanager
def running(
    settings: Settings, credentials: Credentials, host: str = "127.0.0.1", port: int = 0
) -> Iterator[str]:
    """A server on a free port of ``host`` in a thread; yields its base URL."""
    config = uvicorn.Config(
        create_app(settings, credentials), host=host, port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="chordload-ui", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the dashboard server did not start within 15 s")
        time.sleep(0.02)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
