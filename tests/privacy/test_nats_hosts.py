"""Privacy on the NATS log with several pipeline hosts: a deletion reaches every pipeline's own
data dir (archive files, destination ledgers), not only the one that runs the regulation."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

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


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver().start()
    yield found
    found.stop()


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
