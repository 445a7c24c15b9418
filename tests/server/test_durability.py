"""Durability: every 200 survives kill -9; SIGTERM is a clean stop; workers share the log."""

from __future__ import annotations

import collections
import json
import os
import re
import signal
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.conftest import Server, eventually
from tests.gateway.helpers import GATEWAY_CONFIG, new_id, post, stored_one
from tests.server.load import Load, quarantined_ids, read_all


def test_every_acknowledged_message_survives_kill_9(make_server: Callable[..., Server]) -> None:
    server = make_server(config=GATEWAY_CONFIG, workers=2)
    load = Load(server, threads=8).start()
    try:
        load.wait_for(3000)
        server.kill()  # SIGKILL to the supervisor and both workers, mid-traffic
    finally:
        load.stop()
    acked, acked_bad = list(load.acked), list(load.acked_quarantined)
    assert set(load.statuses) == {200}

    server.start()
    records = read_all(server)
    ids = [r.message_id for r in records]
    assert len(ids) == len(set(ids)), "a message was stored twice"
    missing = set(acked) - set(ids)
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
    assert not set(acked_bad) - quarantined_ids(server), "acknowledged refusals lost"

    # The restarted server keeps serving, appending after what survived.
    message_id = new_id()
    assert post(server, "/v1/track", {"userId": "u", "event": "After",
                                      "messageId": message_id}).status_code == 200
    assert stored_one(server, message_id)["event"] == "After"
    assert len(read_all(server)) == len(records) + 1


def _readiness(server: Server) -> int | None:
    try:
        return httpx.get(server.url + "/readyz", timeout=5).status_code
    except httpx.HTTPError:
        return None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_stops_cleanly_and_keeps_everything_acknowledged(
        make_server: Callable[..., Server], signum: int) -> None:
    # A drain of 5 s (0.5 s by default): longer than any step below takes on a busy machine.
    server = make_server(config=GATEWAY_CONFIG, workers=2,
                         env={"TRACKD_SERVER_DRAIN_SECONDS": "5"})
    load = Load(server, threads=6).start()
    try:
        load.wait_for(1000)
        assert server.proc is not None
        os.killpg(server.proc.pid, signum)  # as a terminal's Ctrl-C or a service manager
        # draining: /readyz says 503 (a load balancer stops sending here) and new tracking
        # requests get 503 + Retry-After, then the port closes
        eventually(lambda: _readiness(server) == 503, timeout=4)
        eventually(lambda: load.statuses.get(503), timeout=4)
        code = server.proc.wait(30)
        server.proc = None
    finally:
        load.stop()
    assert code == 0
    assert set(load.statuses) == {200, 503}
    assert load.retry_after and all(r and int(r) >= 1 for r in load.retry_after)
    stored_ids = {r.message_id for r in read_all(server)}
    assert not set(load.acked) - stored_ids
    assert not set(load.acked_quarantined) - quarantined_ids(server)
    assert "Traceback" not in server.output.read_text()


def test_two_workers_share_the_port_and_every_message_is_readable_in_order(
        make_server: Callable[..., Server]) -> None:
    server = make_server(config=GATEWAY_CONFIG, workers=2)
    load = Load(server, threads=8, batch_size=5, fresh_connections=True).start()
    try:
        load.wait_for(1500)
        eventually(lambda: len({r.shard for r in read_all(server)}) == 2, timeout=30)
    finally:
        load.stop()
    records = read_all(server)
    assert {r.shard for r in records} == {"gw0", "gw1"}
    assert {r.message_id for r in records} >= set(load.acked)

    # Per shard, offsets grow, and each client's messages (each sent after the previous
    # one was acknowledged) appear in the order they were sent.
    position = {mid: i for seq in load.sequences.values() for i, mid in enumerate(seq)}
    by_shard: dict[str, list[int]] = collections.defaultdict(list)
    for record in records:
        by_shard[record.shard].append(record.offset)
    for offsets in by_shard.values():
        assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)
    for n in load.sequences:
        for shard in ("gw0", "gw1"):
            order = [position[r.message_id] for r in records
                     if r.shard == shard and r.message_id.startswith(f"t{n}-")
                     and r.message_id in position]
            assert order == sorted(order), f"client {n} out of order in {shard}"

    # /metrics on either worker adds up both workers' counters.
    def total_accepted() -> float:
        text = httpx.get(server.url + "/metrics").text
        return sum(float(v) for v in re.findall(
            r'^trackd_messages_accepted_total\{[^}]*\} (\S+)$', text, re.M))

    eventually(lambda: total_accepted() == len(records), timeout=15)


def test_trackd_send(make_server: Callable[..., Server]) -> None:
    server = make_server(config=GATEWAY_CONFIG)
    result = server.run_cli("send", "track", "--user-id", "cli-user", "--event", "CLI Sent",
                            "--properties", '{"plan": "pro"}')
    assert result.stdout.startswith("Sent track with messageId ")
    result = server.run_cli("send", "identify", "--user-id", "cli-user", "--write-key",
                            "wk_backend", "--traits", '{"email": "a@example.com"}')
    assert result.stdout.startswith("Sent identify with messageId ")
    records = read_all(server)
    track = [r for r in records if r.type == "track"]
    assert len(track) == 1 and track[0].source == "web"
    identify = [r for r in records if r.type == "identify"]
    assert len(identify) == 1 and identify[0].source == "backend"
    doc = json.loads(track[0].body)
    assert (doc["userId"], doc["event"], doc["properties"]) == ("cli-user", "CLI Sent",
                                                                {"plan": "pro"})
    failed = server.run_cli("send", "track", "--user-id", "cli-user", check=False)
    assert failed.returncode != 0
    assert "400" in failed.stderr and "Missing required field: event" in failed.stderr


def test_a_killed_worker_is_restarted_and_nothing_acknowledged_is_lost(
        make_server: Callable[..., Server]) -> None:
    server = make_server(config=GATEWAY_CONFIG, workers=2)
    supervisor = server.proc
    assert supervisor is not None
    [first, second] = worker_pids(supervisor.pid)
    load = Load(server, threads=6, fresh_connections=True).start()
    try:
        load.wait_for(500)
        os.kill(first, signal.SIGKILL)
        eventually(lambda: len(worker_pids(supervisor.pid)) == 2
                   and first not in worker_pids(supervisor.pid), timeout=30)
        acked_before = len(load.acked)
        load.wait_for(acked_before + 500)  # both workers serve again
    finally:
        load.stop()
    assert second in worker_pids(supervisor.pid)
    stored_ids = {r.message_id for r in read_all(server)}
    assert not set(load.acked) - stored_ids
    assert httpx.get(server.url + "/readyz").status_code == 200


def worker_pids(supervisor: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{supervisor}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    return sorted(pids)


def test_metrics_report_the_log_size(make_server: Callable[..., Server]) -> None:
    server = make_server(config=GATEWAY_CONFIG)
    assert post(server, "/v1/track", {"userId": "u", "event": "E"}).status_code == 200

    def log_bytes() -> float:
        match = re.search(r"^trackd_log_bytes (\S+)$", httpx.get(server.url + "/metrics").text,
                          re.M)
        return float(match.group(1)) if match else 0.0

    assert eventually(log_bytes, timeout=15) > 0
