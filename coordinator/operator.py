"""Who asked: the person (or process) behind a manual action, as audit records name it."""

from __future__ import annotations

import getpass
import socket


def operator() -> str:
    """``user@host`` of this process, what stop requests and checkpoint changes record."""
    return f"{getpass.getuser()}@{socket.gethostname()}"
