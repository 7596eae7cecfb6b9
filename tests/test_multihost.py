"""Workers on two hosts: each in its own network namespace with its own address, reaching
Redis and Postgres only over its veth link. One run uses both; then one host is cut off mid-run
(its workers killed, its link taken down) and the run still completes correctly.

If the machine refuses network namespaces, the same run is proven with the two workers as
separate process groups on this host instead, and the test says so in its output.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import uuid

import pytest
import yaml
from sqlalchemy import text

from coordinator.launch import launch
from coordinator.watch import wait
from shared.engines import get_engine
from shared.metadata import store
from shared.run.statuses import ChunkStatus, RunStatus
from tests.conftest import PG_HOST, REDIS_URL, TOKEN
from tests.pgdata import BUSINESS_COLUMNS, create_customers, scd2_mapping
from tests.tcp_proxy import TcpProxy
from tests.test_lifecycle import wait_until
from tests.worker_process import WorkerProcess

pytestmark = pytest.mark.e2e


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


class Host:
    """A network namespace joined to this machine by a veth pair (a /30 of its own)."""

    def __init__(self, label: str, subnet: int):
        tag = uuid.uuid4().hex[:6]
        self.netns = f"cl{tag}{label}"
        self.host_if, self.ns_if = f"clh{tag}{label}", f"cln{tag}{label}"
        self.gateway = f"10.213.{subnet}.1"  # this machine's side of the link
        self.address = f"10.213.{subnet}.2"  # the namespace's own address
        self.proxies: list[TcpProxy] = []

    def create(self) -> None:
        _ip("netns", "add", self.netns)
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        _ip("link", "set", self.ns_if, "netns", self.netns)
        _ip("addr", "add", f"{self.gateway}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        for args in (
            ("addr", "add", f"{self.address}/30", "dev", self.ns_if),
            ("link", "set", self.ns_if, "up"),
            ("link", "set", "lo", "up"),
        ):
            _ip("netns", "exec", self.netns, "ip", *args)

    def expose(self, port: int) -> int:
        """Forward a loopback service to this host's gateway; returns the port to use."""
        proxy = TcpProxy(self.gateway, port)
        self.proxies.append(proxy)
        return proxy.port

    def cut_off(self) -> None:
        _ip("link", "set", self.host_if, "down")

    def destroy(self) -> None:
        for proxy in self.proxies:
            proxy.close()
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, timeout=30)


def _group_alive(pgid: int) -> bool:
    """Any process of the group still running (zombies, waiting to be reaped, do not count)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _namespaces_work() -> bool:
    probe = f"clprobe{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
        _ip("netns", "del", probe)
        return True
    except (subprocess.CalledProcessError, FileNotFoundError, OSError):
        return False


def _config_for(base_config: dict, host: Host | None) -> dict:
    """The session's config, with every address rewritten to reach services via ``host``."""
    config = yaml.safe_load(yaml.safe_dump(base_config))
    celery = config["celery"]
    celery["queue"] = f"cl-{TOKEN}-hosts"
    for key in ("broker_transport_options", "result_backend_transport_options"):
        celery[key] = {**celery[key], "unacked_restore_interval": 1, "unacked_restore_throttle": 1}
    if host is None:
        return config
    pg_port, redis_port = host.expose(5432), host.expose(6379)
    pg_local = PG_HOST.split("@", 1)[1]  # 127.0.0.1:5432
    redis_local = REDIS_URL.split("//", 1)[1].split("/", 1)[0]
    swap = {pg_local: f"{host.gateway}:{pg_port}", redis_local: f"{host.gateway}:{redis_port}"}
    for section in (config, config["connections"]):
        for key, value in list(section.items()):
            if isinstance(value, str):
                for old, new in swap.items():
                    value = value.replace(old, new)
                section[key] = value
    config["connections"] = {
        k: v for k, v in config["connections"].items() if v.startswith("postgresql")
    }
    return config


def test_workers_on_two_hosts_survive_losing_one(
    base_config, session_settings, make_settings, wh, schema, tmp_path, capsys
):
    create_customers(wh, schema, 120_000)
    mapping = scd2_mapping(
        schema, batch_rows=1_000, chunking={"rows_per_chunk": 10_000, "min_rows_for_parallel": 1}
    )
    settings = make_settings({schema: mapping})
    run_settings = settings.model_copy(
        update={"celery": settings.celery.model_copy(update={"queue": f"cl-{TOKEN}-hosts"})}
    )
    metadata = get_engine(settings.metadata)
    env = {"CHORDLOAD_VISIBILITY_TIMEOUT_S": "10"}

    isolated = os.geteuid() == 0 and _namespaces_work()
    hosts: dict[str, Host | None] = {"a": None, "b": None}
    workers: dict[str, WorkerProcess] = {}
    try:
        if isolated:
            subnet = random.randint(1, 120) * 2
            hosts = {"a": Host("a", subnet), "b": Host("b", subnet + 1)}
            for host in hosts.values():
                host.create()
        else:
            with capsys.disabled():
                print(
                    "\nnetwork namespaces refused here: the two 'hosts' are separate process "
                    "groups on this machine"
                )
        for label, host in hosts.items():
            path = tmp_path / f"{label}.yaml"
            path.write_text(yaml.safe_dump(_config_for(base_config, host)))
            workers[label] = WorkerProcess(
                path,
                queue=f"cl-{TOKEN}-hosts",
                name=f"host{label}-{TOKEN}",
                concurrency=1,
                log_path=tmp_path / f"{label}.log",
                extra_env=env,
                command_prefix=["ip", "netns", "exec", host.netns] if host else None,
            )
            workers[label].start()

        run_id = launch(schema, settings=run_settings)

        def b_is_mid_chunk():
            chunks = store.get_chunks(metadata, run_id)
            hosts_seen = {c.worker.split("@")[0] for c in chunks if c.worker}
            running_on_b = [
                c
                for c in chunks
                if c.status is ChunkStatus.RUNNING
                and c.worker
                and c.worker.startswith(f"hostb-{TOKEN}")
                and c.batches_done >= 2
            ]
            return running_on_b[0] if len(hosts_seen) == 2 and running_on_b else None

        taken = wait_until(b_is_mid_chunk, timeout_s=60, what="both hosts loading, b mid-chunk")
        os.killpg(workers["b"].proc.pid, signal.SIGKILL)  # host b is gone...
        # ...once every process of it has exited: its sockets are closed and their FINs on
        # the wire, so no database transaction of b is left holding row locks. (Cutting the
        # link first would leave b's transaction open behind the forwarder until TCP
        # keepalive: see the note on partitions in docs/operations.md.)
        wait_until(
            lambda: not _group_alive(workers["b"].proc.pid),
            timeout_s=30,
            what="host b's processes to exit",
        )
        if hosts["b"]:
            hosts["b"].cut_off()  # ...and unreachable
        run = wait(run_id, settings=settings, timeout_s=120)
    finally:
        for worker in workers.values():
            worker.stop()
        for host in hosts.values():
            if host:
                host.destroy()
    assert run.status is RunStatus.SUCCESS, run.message
    chunks = store.get_chunks(metadata, run_id)
    assert {c.worker.split("@")[0] for c in chunks} >= {f"hosta-{TOKEN}"}
    redone = store.get_chunk(metadata, run_id, taken.chunk_no)
    assert redone.attempts >= 2 and redone.worker.startswith(f"hosta-{TOKEN}"), (
        "host a took over the chunk host b was loading"
    )
    target, source = f'"{schema}"."dim_customer"', f'"{schema}"."customers"'
    with wh.connect() as conn:
        diff = conn.execute(
            text(
                f"SELECT count(*) FROM ((SELECT {BUSINESS_COLUMNS} FROM {target} EXCEPT ALL SELECT "
                f"{BUSINESS_COLUMNS} FROM {source}) UNION ALL (SELECT {BUSINESS_COLUMNS} FROM "
                f"{source} EXCEPT ALL SELECT {BUSINESS_COLUMNS} FROM {target})) d"
            )
        ).scalar_one()
    assert diff == 0, "target equals source, one version per key"
