"""Privacy on the NATS log: a deleted user is erased from the JetStream stream (and from the
server's files), the suppression list and the regulations are shared by every process of a
deployment through JetStream KV, and a gateway waits for that shared state before it is ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import httpx
import nats
import nats.js.errors
import pytest

from tests.conftest import Server, eventually
from tests.log.natsd import (
    NatsNode,
    free_port,
    machine_nats_up,
    nats_binary,
)
from tests.privacy.common import (
    ADMIN,
    CONFIG,
    RUN,
    files_holding,
    finished,
    loaded,
    regulate,
    regulation,
    sdk_traffic,
    warehouse_config,
)
from tests.warehouse import pg
from trackd.log.jetstream import JetStreamLog
from trackd.log.jetstream_erase import JetStreamErasure
from trackd.log.records import Refused
from trackd.privacy.gate import PrivacyGate
from trackd.privacy.regulations_kv import KvRegulations
from trackd.privacy.shared import SharedState
from trackd.settings import LogSettings

needs_binary = pytest.mark.skipif(nats_binary() is None, reason="no nats-server binary")
needs_nats = pytest.mark.skipif(not machine_nats_up() and nats_binary() is None,
                                reason="no NATS on 127.0.0.1:4222 and no nats-server binary")


def nats_privacy_config(url: str, stream: str, extra: str = "") -> str:
    return CONFIG.format(delay=0.5).replace(
        "[log]\n", f'[log]\nurl = "{url}"\nstream = "{stream}"\n') + extra


def stream_payloads(url: str, stream: str) -> bytes:
    """Every message of the stream (accepted, quarantined, violations), read back."""
    async def read() -> bytes:
        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            info = await js.stream_info(stream)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    out.append((await js.get_msg(stream, seq)).data or b"")
            return b"\n".join(out)
        finally:
            await nc.close()

    return asyncio.run(read())


def holding(root: Path, needle: bytes) -> list[str]:
    """The files under `root` whose raw bytes hold `needle`."""
    return [str(p.relative_to(root)) for p in sorted(root.rglob("*"))
            if p.is_file() and needle in p.read_bytes()]


@needs_binary
def test_a_deleted_user_is_erased_from_the_stream_and_the_servers_files(
        tmp_path: Path, make_server: Callable[..., Server]) -> None:
    node = NatsNode(tmp_path / "nats", "own").start()
    try:
        server = make_server(nats_privacy_config(node.url, "priv"))
        doomed, kept = f"doomed-{RUN}-user", [f"kept-{RUN}-{n}" for n in range(2)]
        sdk_traffic(server, [kept[0], doomed, kept[1]])
        refused = httpx.post(server.url + "/v1/track", auth=("wk_web", ""), timeout=30,
                             json={"userId": doomed, "properties": {"no": "event"}})
        assert refused.status_code == 400  # quarantined, on its own subject of the stream
        eventually(lambda: loaded(server, [doomed, *kept]), timeout=60)
        store = node.dir / "js"
        before = stream_payloads(node.url, "priv")
        assert doomed.encode() in before and holding(store, doomed.encode())

        done = finished(server, regulate(server, "DELETE_INTERNAL", [doomed]))
        stores = {s["name"]: s for s in done["stores"]}
        assert stores["log"]["status"] == "FINISHED" and stores["log"]["rows"] >= 6
        after = stream_payloads(node.url, "priv")
        for needle in (doomed, f"anon-{doomed}", f"old-{doomed}"):
            assert needle.encode() not in after, needle  # read back: none of their messages
            assert holding(store, needle.encode()) == [], needle  # nor a byte on the server
            assert files_holding(server.data_dir, needle.encode()) == [], needle
        for other in kept:  # the others' messages stay, so the scans are not vacuous
            assert other.encode() in after
            assert holding(store, other.encode())
    finally:
        node.kill()


@dataclass
class AdminView:
    url: str


def admin_of(server: Server) -> Server:
    """A pipeline process's admin API (its own listener), where the helpers look."""
    info = json.loads((server.data_dir / "run" / "server.json").read_text())
    return cast(Server, AdminView(f"http://127.0.0.1:{info['admin_port']}"))


def stored(url: str, stream: str, needle: str) -> bool:
    return needle.encode() in stream_payloads(url, stream)


@needs_nats
@pytest.mark.skipif(not pg.server_up(), reason="no PostgreSQL on 127.0.0.1:5432")
def test_suppression_and_regulations_are_shared_by_every_gateway_and_pipeline(
        make_server: Callable[..., Server], shared_stream: tuple[str, str]) -> None:
    url, stream = shared_stream
    with pg.database("trackd_natspriv") as database:
        config = nats_privacy_config(url, stream, warehouse_config(database)).replace(
            "[server]\n", '[server]\nadmin_host = "127.0.0.1"\nadmin_port = 0\n')
        pipelines = [make_server(config, name=f"pipeline{n}", start=False).start(
            "--role", "pipeline") for n in (1, 2)]
        first, second = (admin_of(p) for p in pipelines)
        gateway = make_server(config, name="gateway", start=False).start("--role", "gateway")
        user, other = f"quiet-{RUN}", f"loud-{RUN}"

        def send(who: str, marker: str) -> None:
            answer = httpx.post(gateway.url + "/v1/track", auth=("wk_web", ""), timeout=30,
                                json={"userId": who, "event": "Shared", "properties": {
                                    "marker": marker}})
            assert answer.status_code == 200, answer.text

        send(user, f"before-{RUN}")
        assert stored(url, stream, f"before-{RUN}")
        # suppressed through one pipeline's admin API, on other hosts' data dirs
        regulation_id = regulate(first, "SUPPRESS_ONLY", [user])
        finished(first, regulation_id)
        assert regulation(second, regulation_id)["status"] == "FINISHED"  # seen from both
        listed = httpx.get(second.url + "/api/v1/regulations", headers=ADMIN, timeout=30)
        assert regulation_id in {r["id"] for r in listed.json()["data"]["regulations"]}
        send(user, f"hushed-{RUN}")  # answered 200, stored nowhere
        send(other, f"heard-{RUN}")
        assert stored(url, stream, f"heard-{RUN}")
        assert not stored(url, stream, f"hushed-{RUN}")
        gateway.stop()  # and after a restart of the gateway
        gateway.start("--role", "gateway")
        send(user, f"restarted-{RUN}")
        send(other, f"again-{RUN}")
        assert stored(url, stream, f"again-{RUN}")
        assert not stored(url, stream, f"restarted-{RUN}")
        # lifted through the other pipeline
        finished(second, regulate(second, "UNSUPPRESS", [user]))
        send(user, f"back-{RUN}")
        assert stored(url, stream, f"back-{RUN}")
        for pipeline in pipelines:  # before their database goes
            pipeline.stop(timeout=30)


@needs_nats
def test_one_pipeline_takes_each_regulation(shared_stream: tuple[str, str]) -> None:
    url, stream = shared_stream

    async def scenario() -> None:
        states = [SharedState(LogSettings(url=url, stream=stream)) for _ in range(2)]
        records = [KvRegulations(state) for state in states]
        for record in records:
            record.attach(asyncio.get_running_loop())
        try:
            made = await asyncio.to_thread(records[0].create, "DELETE_INTERNAL", "USER_ID",
                                           {"user_ids": ["someone"]}, ["hash"], None, ["log"])
            taken = await asyncio.gather(*[asyncio.to_thread(r.unfinished) for r in records])
            assert sorted(len(t) for t in taken) == [0, 1]  # one of the two, never both
            [work] = [w for t in taken for w in t]
            assert work.id == made and work.ids == {"user_ids": ["someone"]}
            owner = records[[len(t) for t in taken].index(1)]
            assert [w.id for w in await asyncio.to_thread(owner.unfinished)] == [made]
            await asyncio.to_thread(owner.finish, made, "FINISHED")
            other = records[1 - records.index(owner)]
            shown = await asyncio.to_thread(other.get, made)
            assert shown is not None and shown["status"] == "FINISHED"
            assert await asyncio.to_thread(other.unfinished) == []
            kv = await states[0].regulations_bucket()
            with pytest.raises(nats.js.errors.KeyNotFoundError):
                await kv.get(f"work.{made}")  # the ids are gone
        finally:
            for state in states:
                await state.close()

    asyncio.run(scenario())


@needs_binary
def test_a_gateway_waits_for_the_shared_state_then_keeps_it_when_nats_fails(
        tmp_path: Path) -> None:
    node = NatsNode(tmp_path / "nats", "late", port=free_port())

    async def scenario() -> None:
        shared = SharedState(LogSettings(url=node.url, stream="late"), timeout=2)
        gate = PrivacyGate((), tmp_path / "data", shared=shared)
        starting = asyncio.create_task(gate.start())
        try:
            await asyncio.sleep(0.5)
            assert not gate.loaded and not starting.done()  # NATS not there yet: still trying
            await asyncio.to_thread(node.start)
            await asyncio.wait_for(starting, 30)
            # Read within start's first 10 s, or (a slow machine) by the retries that follow it.
            await eventually_async(lambda: gate.loaded, 30)
            writer = SharedState(LogSettings(url=node.url, stream="late"))
            keys = await writer.keys()
            await writer.change_suppressed(lambda hashes: {keys.subject_hash("u", "hushed")})
            await writer.close()
            await eventually_async(lambda: gate.suppressed({"userId": "hushed"}))
            await asyncio.to_thread(node.kill)
            await asyncio.sleep(2)  # reads fail meanwhile: the last list stays
            assert gate.loaded and gate.suppressed({"userId": "hushed"})
            assert not gate.suppressed({"userId": "someone else"})
        finally:  # also on a failure: a client left reconnecting would hang asyncio.run
            starting.cancel()
            await asyncio.wait([asyncio.ensure_future(gate.stop())], timeout=10)

    try:
        asyncio.run(scenario())
    finally:
        node.kill()


async def eventually_async(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the timeout"
        await asyncio.sleep(0.1)


@needs_nats
def test_retention_expires_a_sources_old_quarantine_on_the_stream(
        shared_stream: tuple[str, str]) -> None:
    url, stream = shared_stream

    async def scenario() -> None:
        log = JetStreamLog(LogSettings(url=url, stream=stream))
        await log.start()
        state = SharedState(LogSettings(url=url, stream=stream))
        try:
            await log.append([], [
                Refused("web", "old-web", "2020-01-01T00:00:00.000Z", None, "bad", b"{}"),
                Refused("web", "new-web", "2026-06-01T00:00:00.000Z", None, "bad", b"{}"),
                Refused("app", "old-app", "2020-01-01T00:00:00.000Z", None, "bad", b"{}")])
            erasure = JetStreamErasure(stream, state.client)
            assert await erasure.expire_quarantine("web", "2026-01-01T00:00:00.000Z") == 1
            left = {q["messageId"] for q in await log.quarantined()}
            assert left == {"new-web", "old-app"}  # the other source keeps its own
        finally:
            await log.close()
            await state.close()

    asyncio.run(scenario())
