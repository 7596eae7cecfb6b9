"""The dashboard's rules that need no server: who is let in, which POSTs count as this
site's, when ``chordload ui`` may start, and the geometry of the chunk timeline."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from starlette.requests import Request

from coordinator.ui.security import (
    CSRF_COOKIE,
    Credentials,
    cross_site_refusal,
    refuse_unsafe_start,
)
from coordinator.ui.timeline import chunk_timeline
from shared.errors import ConfigError
from shared.metadata.models import ChunkLog
from shared.run.statuses import ChunkStatus

CREDS = Credentials("ops", "s3cret:with:colons", "tok")


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_credentials_prove_a_user_or_nobody():
    assert CREDS.check(_basic("ops", "s3cret:with:colons")) == "ops"
    assert CREDS.check("Bearer tok") == "token"
    for wrong in (
        None,
        "",
        _basic("ops", "nope"),
        _basic("root", "s3cret:with:colons"),
        "Basic !!!not-base64",
        "Bearer toke",
        "Digest x",
    ):
        assert CREDS.check(wrong) is None, wrong
    assert Credentials(token="tok").check(_basic("ops", "tok")) is None  # no basic configured


def test_user_and_password_go_together():
    with pytest.raises(ConfigError, match="CHORDLOAD_UI_PASSWORD"):
        Credentials.from_env({"CHORDLOAD_UI_USER": "ops"})
    assert Credentials.from_env({"CHORDLOAD_UI_TOKEN": "t"}).required
    assert not Credentials.from_env({}).required


def test_start_needs_credentials_or_local_only_on_loopback():
    refuse_unsafe_start(CREDS, "0.0.0.0", local_only=False)
    refuse_unsafe_start(Credentials(), "127.0.0.1", local_only=True)
    with pytest.raises(ConfigError, match="--local-only"):
        refuse_unsafe_start(Credentials(), "127.0.0.1", local_only=False)
    with pytest.raises(ConfigError, match="loopback"):
        refuse_unsafe_start(Credentials(), "0.0.0.0", local_only=True)


def _post(headers: dict[str, str]) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "http",
        "method": "POST",
        "scheme": "http",
        "path": "/runs/r/stop",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8089"), *raw],
        "server": ("127.0.0.1", 8089),
    }
    return Request(scope)


@pytest.mark.parametrize(
    ("headers", "token", "refused"),
    [
        ({"Origin": "http://127.0.0.1:8089", "Cookie": f"{CSRF_COOKIE}=abc"}, "abc", None),
        ({"Referer": "http://127.0.0.1:8089/runs/r", "Cookie": f"{CSRF_COOKIE}=abc"}, "abc", None),
        ({"Origin": "http://evil.example", "Cookie": f"{CSRF_COOKIE}=abc"}, "abc", "evil"),
        ({"Origin": "http://127.0.0.1:8090", "Cookie": f"{CSRF_COOKIE}=abc"}, "abc", "8090"),
        ({"Cookie": f"{CSRF_COOKIE}=abc"}, "abc", "no Origin"),
        ({"Origin": "null", "Cookie": f"{CSRF_COOKIE}=abc"}, "abc", "no Origin"),
        ({"Origin": "http://127.0.0.1:8089", "Cookie": f"{CSRF_COOKIE}=abc"}, "abd", "token"),
        ({"Origin": "http://127.0.0.1:8089"}, "abc", "token"),
        ({"Origin": "http://127.0.0.1:8089", "Cookie": f"{CSRF_COOKIE}=abc"}, None, "token"),
    ],
)
def test_a_post_counts_only_from_this_site_with_its_token(headers, token, refused):
    reason = cross_site_refusal(_post(headers), token)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


def _chunk(no: int, worker: str | None, status: ChunkStatus, start_s, end_s) -> ChunkLog:
    t0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    return ChunkLog(
        run_id="r",
        chunk_no=no,
        task_id=f"r.{no}",
        status=status,
        worker=worker,
        rows_read=10,
        attempts=1,
        started_at=None if start_s is None else t0 + dt.timedelta(seconds=start_s),
        ended_at=None if end_s is None else t0 + dt.timedelta(seconds=end_s),
    )


def test_timeline_one_lane_per_worker_and_bars_in_time():
    now = dt.datetime(2026, 1, 1, 0, 1, 40, tzinfo=dt.UTC)
    chunks = [
        _chunk(0, "w1/1", ChunkStatus.SUCCESS, 0, 50),
        _chunk(1, "w1/2", ChunkStatus.RUNNING, 0, None),  # still running: up to now
        _chunk(2, "w1/1", ChunkStatus.FAILED, 50, 60),
        _chunk(3, None, ChunkStatus.PENDING, None, None),
    ]
    timeline = chunk_timeline(chunks, now)
    assert timeline.lanes == ["w1/1", "w1/2"] and timeline.pending == 1
    bars = {b.chunk_no: b for b in timeline.bars}
    assert set(bars) == {0, 1, 2}
    assert bars[0].y == bars[2].y != bars[1].y  # the same worker's chunks share a lane
    plot = timeline.width - timeline.label_w
    assert bars[0].x == bars[1].x == timeline.label_w
    assert bars[0].width == pytest.approx(plot / 2, abs=0.1)  # 50 of 100 s
    assert bars[1].width == pytest.approx(plot, abs=0.1)  # running until now
    assert bars[2].x == pytest.approx(timeline.label_w + plot / 2, abs=0.1)
    assert {b.colour for b in timeline.bars} == {"#2e9e5b", "#2f7fd8", "#d0393e"}
    assert chunk_timeline([chunks[3]], now).bars == []
