"""Failure notifications against a real HTTP receiver and real workers: a FAILED run is
posted (retried after the receiver's 500), the next SUCCESS is posted as recovered, a
SUCCESS after a SUCCESS is no news, and a receiver's failure never changes a run's outcome."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from coordinator.launch import launch
from coordinator.watch import wait
from tests.pgdata import create_customers

pytestmark = pytest.mark.e2e


class Receiver:
    """A webhook receiver: records each JSON body, answers with the next scripted status
    (200 once the script is used up)."""

    def __init__(self, statuses: list[int]):
        self.statuses = list(statuses)
        self.bodies: list[dict] = []
        self.arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                with receiver.arrived:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.bodies.append(body)
                    receiver.arrived.notify_all()
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, count: int, timeout_s: float = 30) -> list[dict]:
        with self.arrived:
            assert self.arrived.wait_for(lambda: len(self.bodies) >= count, timeout_s), self.bodies
            return list(self.bodies)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver([500])  # the first delivery fails: it is retried
    yield made
    made.server.shutdown()


def test_failed_and_recovered_runs_are_posted(workers, make_settings, wh, schema, receiver):
    table = create_customers(wh, schema, 300)

    def settings(divisor: str):
        return make_settings(
            {
                "watched": {
                    "source": {
                        "connection": "wh",
                        "query": f"SELECT id, name, 1 / ({divisor}) AS ratio FROM {table}",
                    },
                    "target": {"connection": "wh", "table": f"{schema}.dim_watched"},
                    "keys": ["id"],
                    "notify": {"webhook_url": receiver.url, "backoff_s": 0.1},
                }
            }
        )

    def run(divisor: str) -> str:
        s = settings(divisor)
        ended = wait(launch("watched", settings=s), settings=s, timeout_s=60, poll_s=0.2)
        return f"{ended.run_id} {ended.status.value}"

    failing, fine = "id - 150", "id + 1000"  # row 150 divides by zero when a chunk reads it
    first = run(failing)
    assert first.endswith("FAILED")
    bodies = receiver.wait_for(2)
    assert bodies[0] == bodies[1]  # answered 500, sent again
    failed = bodies[0]
    assert (failed["event"], failed["status"], failed["mapref"]) == ("failed", "FAILED", "watched")
    assert failed["run_id"] == first.split()[0]
    assert failed["text"].startswith(f"chordload: run {failed['run_id']} of watched FAILED: ")
    assert "division by zero" in failed["text"] and failed["message"] in failed["text"]

    second = run(fine)
    assert second.endswith("SUCCESS")  # the receiver's 500 before did not touch any run
    recovered = receiver.wait_for(3)[2]
    assert (recovered["event"], recovered["run_id"]) == ("recovered", second.split()[0])
    assert recovered["rows_inserted"] == 300

    third = run(fine)  # a SUCCESS after a SUCCESS: no news
    fourth = run(failing)
    assert third.endswith("SUCCESS") and fourth.endswith("FAILED")
    bodies = receiver.wait_for(4)
    assert [b["run_id"] for b in bodies[2:]] == [second.split()[0], fourth.split()[0]]
