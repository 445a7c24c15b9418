"""Faults on a scaled-out deployment, on a private three-node JetStream cluster (R3 stream).

- Two gateways and two pipeline processes loading PostgreSQL, under load; kill -9 a gateway, a
  pipeline process mid-batch and one NATS node. Afterwards every acknowledged messageId is in
  the warehouse exactly once and the webhook received each at least once.
- Every NATS node down: every send answers 503 with Retry-After, never 200; the nodes back,
  200 again without restarting trackd, and every acknowledged messageId is loaded once.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import Server, eventually
from tests.destinations.receiver import Receiver
from tests.gateway.helpers import new_id, post
from tests.log.natsd import Cluster, nats_binary
from tests.log.test_scale_out import nats_config
from tests.warehouse import pg

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(nats_binary() is None, reason="no nats-server binary")]


@dataclass
class Traffic:
    """Threads posting batches to the gateways in turn; every 200's messageIds are kept."""

    gateways: list[Server]
    threads: int = 4
    acked: set[str] = field(default_factory=set)
    statuses: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Traffic:
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(60)

    def wait_for(self, count: int) -> None:
        eventually(lambda: len(self.acked) >= count, timeout=60)

    def _run(self, n: int) -> None:
        for i in itertools.count():
            if self._stop.is_set():
                return
            gateway = self.gateways[(n + i) % len(self.gateways)]
            ids = [f"f{n}-{i}-{k}" for k in range(10)]
            batch = {"batch": [{"type": "track", "userId": f"u{n}", "event": "Fault",
                                "messageId": m} for m in ids]}
            try:
                answer = httpx.post(gateway.url + "/v1/batch", json=batch,
                                    auth=("wk_web", ""), timeout=10)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            with self._lock:
                self.statuses[answer.status_code] = self.statuses.get(answer.status_code, 0) + 1
                if answer.status_code == 200:
                    self.acked.update(ids)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    nodes = Cluster(tmp_path / "nats").start()
    yield nodes
    nodes.stop()


def test_kill_9_of_a_gateway_a_pipeline_and_a_nats_node_loses_and_repeats_nothing(
        make_server: Callable[..., Server], cluster: Cluster) -> None:
    receiver = Receiver().start()
    try:
        with pg.database() as url:
            hook = (f'[[destinations]]\nname = "hook"\nurl = "{receiver.url}"\n'
                    'batch_size = 50\nlinger = 0.05\n')
            config = nats_config(cluster.url, "faults", hook,
                                 log="replicas = 3\nack_wait_s = 3\n").replace(
                "[warehouse]\n", f'[warehouse]\nurl = "{url}"\n', 1)
            pipelines = [make_server(config, name=f"pipeline{n}", start=False).start(
                "--role", "pipeline") for n in range(2)]
            gateways = [make_server(config, name=f"gw{n}", start=False).start(
                "--role", "gateway") for n in range(2)]
            traffic = Traffic(gateways).start()
            try:
                traffic.wait_for(500)
                gateways[0].kill()  # kill -9, mid-traffic
                traffic.wait_for(len(traffic.acked) + 300)
                gateways[0].start("--role", "gateway")
                pipelines[0].kill()  # mid-batch: loading and delivering all the time
                cluster.nodes[2].kill()  # R3: the two others keep accepting
                traffic.wait_for(len(traffic.acked) + 500)
            finally:
                traffic.stop()
            assert traffic.statuses.get(200)
            assert set(traffic.statuses) <= {200, 503}, traffic.statuses

            def ids_in_warehouse() -> list[str]:
                with psycopg.connect(url) as con:
                    return [row[0] for row in con.execute("SELECT id FROM web.fault")]

            # the survivor loads and delivers what the killed one had read and not finished
            eventually(lambda: traffic.acked <= set(ids_in_warehouse()), timeout=180)
            loaded = ids_in_warehouse()
            assert len(loaded) == len(set(loaded)), "a message was loaded twice"
            eventually(lambda: traffic.acked <= set(receiver.accepted_ids()), timeout=180)
            for server in [*pipelines, *gateways]:
                server.stop()
    finally:
        receiver.stop()


def test_every_nats_node_down_answers_503_and_then_200_without_restart(
        make_server: Callable[..., Server], cluster: Cluster) -> None:
    server = make_server(nats_config(cluster.url, "outage", log="replicas = 3\n"))
    acked: list[str] = []

    def send() -> httpx.Response:
        ids = [new_id("outage") for _ in range(5)]
        answer = post(server, "/v1/batch", {"batch": [
            {"type": "track", "userId": "u", "event": "Outage", "messageId": m} for m in ids]})
        assert answer.status_code in (200, 503), answer.text
        if answer.status_code == 200:
            acked.extend(ids)
        return answer

    eventually(lambda: send().status_code == 200, timeout=60)
    for node in cluster.nodes:
        node.kill()
    for _ in range(10):  # no server left: never 200
        answer = send()
        assert answer.status_code == 503, answer.text
        assert int(answer.headers["retry-after"]) >= 1
    cluster.start()
    # Until the cluster has elected the stream's leader again (about 10 s here), JetStream
    # answers a publish with "no responders" and the gateway, honestly, with 503. Healthy
    # means a run of 200s, after which every send is accepted.
    statuses: list[int] = []
    run = [0]

    def healthy() -> bool:
        answer = send()
        statuses.append(answer.status_code)
        if answer.status_code == 200:
            run[0] += 1
        else:
            run[0] = 0
        return run[0] >= 10

    eventually(healthy, timeout=120, interval=0.2)
    for _ in range(30):
        answer = send()
        assert answer.status_code == 200, (answer.text, statuses)
    assert server.proc is not None and server.proc.poll() is None  # the same process

    def loaded() -> list[str]:
        out = server.run_cli("query", "SELECT id FROM web.outage", "--format", "json", "--all",
                             check=False)
        return [row["id"] for row in json.loads(out.stdout)] if out.returncode == 0 else []

    eventually(lambda: set(acked) <= set(loaded()), timeout=120)
    ids = loaded()
    assert len(ids) == len(set(ids)), "a message was loaded twice"
