"""Privacy on the NATS log with several pipeline hosts: a deletion reaches every pipeline's own
data dir (archive files, destination ledgers), not only the one that runs the regulation, and
a host gone for good before its part makes the regulation PARTIAL_SUCCESS."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Server, eventually
from tests.destinations.receiver import Receiver
from tests.privacy.common import (
    RUN,
    archived_users,
    files_holding,
    finished,
    regulate,
    sdk_traffic,
    warehouse_config,
)
from tests.privacy.test_nats import admin_of, nats_privacy_config, needs_nats
from tests.warehouse import pg
from trackd.privacy import members as members_module
from trackd.privacy.members import Members
from trackd.privacy.regulations_kv import KvRegulations
from trackd.privacy.shared import SharedState
from trackd.settings import LogSettings


@needs_nats
@pytest.mark.skipif(not pg.server_up(), reason="no PostgreSQL on 127.0.0.1:5432")
def test_a_deletion_reaches_every_pipeline_hosts_archive_and_ledgers(
        make_server: Callable[..., Server], shared_stream: tuple[str, str],
        receiver: Receiver) -> None:
    url, stream = shared_stream
    with pg.database("trackd_hosts") as database:
        config = nats_privacy_config(url, stream, warehouse_config(database) + f"""
[[destinations]]
name = "hook"
url = "{receiver.url}/hook"
""").replace("[server]\n", '[server]\nadmin_host = "127.0.0.1"\nadmin_port = 0\n')
        pipelines = [make_server(config, name=f"pipeline{n}", start=False).start(
            "--role", "pipeline") for n in (1, 2)]
        gateway = make_server(config, name="gateway", start=False).start("--role", "gateway")
        doomed, kept = f"far-{RUN}-user", [f"near-{RUN}-{n}" for n in range(3)]

        def both_hold() -> bool:
            """Traffic until each pipeline consumed some of every user's messages."""
            # one request per user, so that JetStream can split them between the pipelines
            sdk_traffic(gateway, [doomed, kept[0], doomed, kept[1], doomed, kept[2]], 5)
            return all(eventually_or_none(functools.partial(holds, p, doomed, kept))
                       for p in pipelines)

        eventually(both_hold, timeout=60)
        done = finished(admin_of(pipelines[0]), regulate(
            admin_of(pipelines[0]), "DELETE_INTERNAL", [doomed]))
        hosts = {h["host"]: h for h in done["hosts"]}
        assert len(hosts) == 2 and all(h["status"] == "FINISHED" for h in hosts.values())
        for pipeline in pipelines:
            host = next(h for name, h in hosts.items() if name.endswith(str(pipeline.data_dir)))
            assert {s["name"] for s in host["stores"]} >= {"archive", "ledgers", "files"}
            for needle in (doomed, f"anon-{doomed}", f"old-{doomed}"):
                assert files_holding(pipeline.data_dir, needle.encode()) == [], needle
            assert doomed not in archived_users(pipeline.data_dir)
            # the others stay on both hosts, so the scans are not vacuous
            assert set(kept) & archived_users(pipeline.data_dir)
            assert any(files_holding(pipeline.data_dir, k.encode()) for k in kept)
        for pipeline in pipelines:  # before their database goes
            pipeline.stop(timeout=30)


def holds(pipeline: Server, doomed: str, kept: list[str]) -> bool:
    """The pipeline's archive and ledgers hold the subject, and its archive another user."""
    archived = archived_users(pipeline.data_dir)
    return doomed in archived and bool(set(kept) & archived) and bool(
        files_holding(pipeline.data_dir / "destinations", doomed.encode()))


def eventually_or_none(check: Callable[[], bool], timeout: float = 3) -> bool:
    try:
        return bool(eventually(check, timeout=timeout, interval=0.2))
    except AssertionError:
        return False


@needs_nats
def test_a_host_gone_for_good_before_its_part_ends_the_regulation_partial(
        tmp_path: Path, shared_stream: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    url, stream = shared_stream
    monkeypatch.setattr(members_module, "GONE_SECONDS", 0.2)  # instead of minutes
    monkeypatch.setattr(members_module, "WAIT_SECONDS", 0.05)

    async def scenario() -> None:
        states = [SharedState(LogSettings(url=url, stream=stream)) for _ in range(2)]
        records = [KvRegulations(state) for state in states]
        hosts = [Members(record, tmp_path / f"host{n}") for n, record in enumerate(records)]
        for record, host in zip(records, hosts, strict=True):
            record.attach(asyncio.get_running_loop())
            await host.beat()
        try:
            made = await asyncio.to_thread(records[0].create, "DELETE_INTERNAL", "USER_ID",
                                           {"user_ids": ["someone"]}, ["hash"], None,
                                           ["log", "archive"])
            assert [w.id for w in await asyncio.to_thread(records[0].unfinished)] == [made]
            assert await hosts[1].pending() == []  # the log first
            await asyncio.to_thread(records[0].set_store, made, "log", "FINISHED")
            [work] = await hosts[1].pending()  # the other host's part, with the ids
            assert work.id == made and work.ids == {"user_ids": ["someone"]}
            assert await hosts[0].pending() == []  # the claimant runs its own in order
            # and goes before it did its part (no more renewals; a lease of 0.1 s here)
            monkeypatch.setattr(members_module, "LEASE_SECONDS", 0.1)
            await hosts[0].report(made, "FINISHED", [])
            assert await asyncio.wait_for(hosts[0].wait(made), 30) == 1
            shown = await asyncio.to_thread(records[0].get, made)
            assert shown is not None
            [gone] = [h for h in shown["hosts"] if h["host"] == hosts[1].host]
            assert gone["status"] == "FAILED" and hosts[1].host in gone["error"]
        finally:
            for state in states:
                await state.close()

    asyncio.run(scenario())
