"""`trackd serve` on the NATS log: roles on separate processes, back-pressure and recovery.

Plain cases use the machine's NATS server with a stream of their own (or, when none runs, a
private one); the outage case runs a private `nats-server` it can kill and start again.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import DEFAULT_CONFIG, ROOT, Server, eventually
from tests.destinations.receiver import Receiver, Reply
from tests.gateway.helpers import new_id, post
from tests.log.natsd import (
    MACHINE_NATS,
    NatsNode,
    delete_stream,
    machine_nats_up,
    nats_binary,
    unique_stream,
)

needs_nats = pytest.mark.skipif(not machine_nats_up() and nats_binary() is None,
                                reason="no NATS on 127.0.0.1:4222 and no nats-server binary")


def nats_config(url: str, stream: str, extra: str = "", *, log: str = "") -> str:
    return (DEFAULT_CONFIG + f'\n[log]\nurl = "{url}"\nstream = "{stream}"\n{log}'
            "[warehouse]\npoll_interval = 0.05\n" + extra)


@pytest.fixture(scope="module")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if machine_nats_up():
        yield MACHINE_NATS
        return
    node = NatsNode(tmp_path_factory.mktemp("nats"), "plain").start()
    yield node.url
    node.kill()


@pytest.fixture
def stream(nats_url: str) -> Iterator[str]:
    name = unique_stream()
    yield name
    if nats_url == MACHINE_NATS:
        delete_stream(name)


def track(message_id: str, event: str = "Scaled") -> dict[str, Any]:
    return {"userId": "u1", "event": event, "messageId": message_id}


def where(server: Server, message_id: str) -> dict[str, Any]:
    result = server.run_cli("events", "show", message_id, "--format", "json", check=False)
    answer: dict[str, Any] = json.loads(result.stdout) if result.stdout.strip() else {}
    return answer


def loaded(server: Server, message_id: str) -> bool:
    return bool(where(server, message_id).get("warehouse", {}).get("found"))


def rows(server: Server, message_id: str) -> int:
    result = server.run_cli("query", f"SELECT count(*) AS n FROM web.scaled "
                            f"WHERE id = '{message_id}'", "--format", "json")
    return int(json.loads(result.stdout)[0]["n"])


def test_roles_other_than_all_are_refused_on_the_sqlite_log(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", DEFAULT_CONFIG)
    for role in ("gateway", "pipeline"):
        result = subprocess.run([*server.command("serve"), "--port", "0", "--role", role],
                                capture_output=True, text=True, cwd=ROOT, timeout=60)
        assert result.returncode != 0
        [line] = result.stderr.strip().splitlines()
        assert f"--role {role} needs the NATS log" in line


@needs_nats
def test_all_in_one_on_the_nats_log_loads_looks_up_and_quarantines(
        make_server: Callable[..., Server], nats_url: str, stream: str) -> None:
    server = make_server(nats_config(nats_url, stream))
    message_id = new_id("nats")
    assert post(server, "/v1/track", track(message_id)).status_code == 200
    eventually(lambda: loaded(server, message_id), timeout=30)
    answer = where(server, message_id)
    assert answer["accepted"][0]["log"]["shard"] == stream  # found in the NATS stream
    assert rows(server, message_id) == 1
    bad = new_id("bad")
    assert post(server, "/v1/track", {"messageId": bad, "event": "No user"}).status_code == 400
    listed = server.run_cli("quarantine", "--format", "json")
    assert bad in listed.stdout
    admin = httpx.get(server.url + "/api/v1/quarantine", timeout=30,
                      headers={"Authorization": "Bearer test-admin-token"})
    assert bad in {q["messageId"] for q in admin.json()["quarantined"]}
    ready = httpx.get(server.url + "/readyz", timeout=30).json()
    assert {s["name"] for s in ready["stages"]} >= {"warehouse", "archive"}


@needs_nats
def test_gateways_and_a_pipeline_in_separate_processes(
        make_server: Callable[..., Server], nats_url: str, stream: str) -> None:
    config = nats_config(nats_url, stream)
    pipeline = make_server(config, name="pipeline", start=False).start("--role", "pipeline")
    gateways = [make_server(config, name=f"gw{n}", start=False).start("--role", "gateway")
                for n in range(2)]
    sent = []
    for n, gateway in enumerate(gateways):
        message_id = new_id(f"gw{n}")
        batch = {"batch": [{"type": "track", **track(message_id)}]}
        first = post(gateway, "/v1/batch", batch)
        again = post(gateways[1 - n], "/v1/batch", batch)  # a retry, through the other one
        assert (first.status_code, again.status_code) == (200, 200)
        sent.append(message_id)
    for message_id in sent:
        eventually(lambda m=message_id: loaded(pipeline, m), timeout=30)  # type: ignore[misc]
        assert rows(pipeline, message_id) == 1
        [in_log] = where(pipeline, message_id)["accepted"]  # stored once by the NATS stream
        assert in_log["log"]["shard"] == stream
    # a gateway has no admin API: the CLI says where it is, /api/* is not served there
    result = gateways[0].run_cli("events", "show", sent[0], check=False)
    assert result.returncode != 0 and "runs --role gateway" in result.stderr
    assert httpx.get(gateways[0].url + "/api/v1/quarantine", timeout=30, headers={
        "Authorization": "Bearer test-admin-token"}).status_code == 404
    status = pipeline.run_cli("status")
    assert "warehouse" in status.stdout and "archive" in status.stdout
    # the DuckDB warehouse has one writer: a second pipeline process refuses, in one line
    second = Server(pipeline.data_dir.parent / "pipeline2", config)
    refused = subprocess.run([*second.command("serve"), "--role", "pipeline"],
                             capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert refused.returncode != 0
    [line] = refused.stderr.strip().splitlines()
    assert "another pipeline process" in line and "PostgreSQL" in line


@pytest.mark.skipif(nats_binary() is None, reason="no nats-server binary")
def test_nats_down_answers_503_with_retry_after_then_200_without_restart(
        tmp_path: Path, make_server: Callable[..., Server]) -> None:
    node = NatsNode(tmp_path / "nats", "solo").start()
    try:
        server = make_server(nats_config(node.url, "outage"))
        assert post(server, "/v1/track", track(new_id())).status_code == 200
        node.kill()
        answer = eventually(lambda: _failing(server), timeout=30)
        assert answer.status_code == 503
        assert int(answer.headers["retry-after"]) >= 1
        assert httpx.get(server.url + "/readyz", timeout=30).status_code == 503
        node.start()
        message_id = new_id("back")
        eventually(lambda: post(server, "/v1/track", track(message_id)).status_code == 200,
                   timeout=30)
        eventually(lambda: loaded(server, message_id), timeout=30)
        assert server.proc is not None and server.proc.poll() is None  # the same processes
    finally:
        node.kill()


def _failing(server: Server) -> httpx.Response | None:
    answer = post(server, "/v1/track", track(new_id()))
    assert answer.status_code in (200, 503), answer.text
    return answer if answer.status_code == 503 else None


@needs_nats
def test_a_full_stream_answers_503_until_trimming_makes_room(
        make_server: Callable[..., Server], nats_url: str, stream: str) -> None:
    # A destination that cannot deliver holds every record it took (retrying), so trimming
    # cannot pass them and the stream fills, however fast the warehouse and archive read.
    receiver = Receiver().start()
    receiver.reply(503)
    try:
        hook = (f'[[destinations]]\nname = "hook"\nurl = "{receiver.url}"\n'
                'max_attempts = 1000\nbackoff_min = 0.1\nbackoff_max = 0.5\n')
        server = make_server(nats_config(nats_url, stream,
                                         "[archive]\nflush_interval = 0.5\n" + hook,
                                         log="max_mb = 1\ntrim_interval = 0.5\n"))
        padding = "x" * 2000
        statuses: list[httpx.Response] = []

        def send() -> int:
            batch = {"batch": [{"type": "track", "userId": "u", "event": "Big",
                                "properties": {"padding": padding}, "messageId": new_id("big")}
                               for _ in range(50)]}
            answer = post(server, "/v1/batch", batch)
            statuses.append(answer)
            return answer.status_code

        eventually(lambda: send() == 503, timeout=60, interval=0)
        full = statuses[-1]
        assert int(full.headers["retry-after"]) >= 1
        assert "Server busy: retry later" in full.text
        assert {a.status_code for a in statuses} == {200, 503}
        # 1 MB holds about 10 of these 100 KB batches: the first ones were all accepted.
        assert 5 <= len(statuses) - 1 <= 15
        receiver.reply(200)  # delivered and acknowledged: trimming makes room again
        eventually(lambda: send() == 200, timeout=60, interval=0.2)
    finally:
        receiver.stop()


@needs_nats
def test_tracking_plan_violations_reach_the_warehouse_through_the_nats_log(
        make_server: Callable[..., Server], nats_url: str, stream: str,
        tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(
        "version: 1\nevents:\n  Known:\n    properties: {type: object}\n")
    config = nats_config(nats_url, stream).replace(
        'write_keys = ["wk_web"]\n', 'write_keys = ["wk_web"]\ntracking_plan = "web.yaml"\n', 1)
    server = make_server(config)
    message_id = new_id("unplanned")
    assert post(server, "/v1/track", track(message_id, "Not In The Plan")).status_code == 200

    def violations() -> int:
        result = server.run_cli("query", "SELECT count(*) AS n FROM web._violations WHERE "
                                f"message_id = '{message_id}'", "--format", "json", check=False)
        return int(json.loads(result.stdout)[0]["n"]) if result.returncode == 0 else 0

    eventually(violations, timeout=30)
    assert violations() == 1


@needs_nats
def test_two_pipeline_processes_share_each_stage_and_take_over_from_a_killed_one(
        make_server: Callable[..., Server], nats_url: str, stream: str) -> None:
    receiver = Receiver().start()
    # The first pipeline's host cannot reach the webhook (its path answers 503): what it takes
    # from the log stays queued in its ledger, retrying, until it is killed.
    receiver.rule = lambda r: Reply(503) if r.path.startswith("/unreachable") else None
    try:
        def config(url: str) -> str:
            # No warehouse here: a DuckDB file has one writer (two need PostgreSQL).
            hook = (f'[[destinations]]\nname = "hook"\nurl = "{url}"\nmax_attempts = 1000\n'
                    'backoff_min = 0.2\nbackoff_max = 0.5\n')
            return nats_config(nats_url, stream, hook, log="ack_wait_s = 2\n").replace(
                "[warehouse]\npoll_interval = 0.05\n", "[warehouse]\nenabled = false\n")

        stuck = make_server(config(receiver.url + "/unreachable"), name="stuck",
                            start=False).start("--role", "pipeline")
        survivor = make_server(config(receiver.url), name="survivor", start=False).start(
            "--role", "pipeline")
        gateway = make_server(config(receiver.url), name="gateway", start=False).start(
            "--role", "gateway")
        sent: list[str] = []

        def send(batches: int) -> None:
            for n in range(batches):
                ids = [new_id("shared") for _ in range(10)]
                # a user per batch: one user's retries do not hold back the others
                batch = {"batch": [{"type": "track", **track(m), "userId": f"u{n}"}
                                   for m in ids]}
                assert post(gateway, "/v1/batch", batch).status_code == 200
                sent.extend(ids)

        def refused() -> int:
            return sum(1 for r in receiver.requests if r.path.startswith("/unreachable"))

        send(20)
        # both share the consumer: the survivor delivers, the stuck one holds records
        eventually(lambda: len(set(receiver.accepted_ids()) & set(sent)) >= 10, timeout=60)
        eventually(lambda: refused() >= 2, timeout=60)
        stuck.kill()  # kill -9 with a queue in its ledger: never delivered, never acknowledged
        send(5)
        # the survivor gets the dead one's records again (ack_wait) and delivers everything,
        # the dead one not coming back
        eventually(lambda: set(sent) <= set(receiver.accepted_ids()), timeout=90)
        for message_id in sent[-10:]:  # sent after the kill: the survivor's ledger has them
            eventually(lambda m=message_id: '"delivered"' in survivor.run_cli(  # type: ignore[misc]
                "events", "show", m, "--format", "json", check=False).stdout, timeout=60)
    finally:
        receiver.stop()
