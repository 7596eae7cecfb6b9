"""Running the ``chordload`` CLI in a pseudo-terminal, as a person at an 80-column terminal
sees it: rich draws its live display, Ctrl-C is a real SIGINT."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time

from tests.cliutil import CHORDLOAD, CONFIG_ENV, REPO

# CSI sequences (colours, cursor movement) and OSC sequences (titles, links)
ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][0-9A-B]")


def plain(text: str) -> str:
    return ANSI.sub("", text)


def screen_lines(text: str) -> list[str]:
    """Every line as it was drawn: rich redraws the live bar after a carriage return or a
    cursor-up, so each of those segments is one line on the screen."""
    text = re.sub(r"\x1b\[\d*A", "\n", text)  # cursor up: the next draw is a new line
    return [seg for line in plain(text).split("\n") for seg in line.split("\r") if seg.strip()]


class PtyProcess:
    """``chordload ARGV`` with a pseudo-terminal of ``columns`` x ``rows`` as its stdin,
    stdout and stderr, in its own session (so SIGINT reaches only it)."""

    def __init__(self, *argv: str, env: dict[str, str] | None = None, columns: int = 80):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        base = {k: v for k, v in os.environ.items() if k not in CONFIG_ENV}
        self.proc = subprocess.Popen(
            [str(CHORDLOAD), *[str(a) for a in argv]],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=REPO,
            env={**base, "TERM": "xterm-256color", "COLUMNS": str(columns), **(env or {})},
            start_new_session=True,
        )
        os.close(slave)
        self.master = master
        self.raw = ""

    def _read(self, timeout_s: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout_s)
        if not ready:
            return True
        try:
            data = os.read(self.master, 65536)
        except OSError:  # EIO: the child closed the terminal
            return False
        if not data:
            return False
        self.raw += data.decode(errors="replace")
        return True

    @property
    def text(self) -> str:
        return plain(self.raw)

    def read_until(self, pattern: str, timeout_s: float) -> re.Match[str]:
        """Read until ``pattern`` (a regex) matches the plain text with its whitespace (line
        breaks of wrapped prose included) collapsed to single spaces; fail at the deadline."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = re.search(pattern, " ".join(self.text.split()))
            if found:
                return found
            left = deadline - time.monotonic()
            if left <= 0 or not self._read(min(left, 0.5)):
                if found := re.search(pattern, " ".join(self.text.split())):
                    return found
                tail = self.text[-3000:]
                raise AssertionError(f"no {pattern!r} within {timeout_s}s; output ends:\n{tail}")

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout_s: float) -> int:
        """Read to the end and return the exit code."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._read(0.2):
            if self.proc.poll() is not None and not select.select([self.master], [], [], 0)[0]:
                break
        code = self.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        while self._read(0):  # what is left in the terminal's buffer
            if not select.select([self.master], [], [], 0)[0]:
                break
        os.close(self.master)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def bar_width(line: str) -> int:
    """The characters of rich's progress bar in a drawn line (full and half cells)."""
    return sum(line.count(c) for c in "━╸╺")
