"""Faults on a scaled-out deployment: a private three-node JetStream cluster, two gateways and a
pipeline process, under load; kill -9 a gateway, the pipeline mid-batch and one NATS node.

Afterwards every acknowledged messageId is in the warehouse exactly once and the destination
received it at least once. (The DuckDB warehouse allows one pipeline process; two sharing the
consumers need the PostgreSQL warehouse.)
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
import pytest

from tests.conftest import Server, eventually
from tests.destinations.receiver import Receiver
from tests.log.natsd import Cluster, nats_binary
from tests.log.test_scale_out import nats_config

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


def test_kill_9_of_a_gateway_the_pipeline_and_a_nats_node_loses_and_repeats_nothing(
        make_server: Callable[..., Server], cluster: Cluster) -> None:
    receiver = Receiver().start()
    try:
        config = nats_config(cluster.url, "faults",
                             f'[[destinations]]\nname = "hook"\nurl = "{receiver.url}"\n',
                             log="replicas = 3\nack_wait_s = 3\n")
        pipeline = make_server(config, name="pipeline", start=False).start("--role", "pipeline")
        gateways = [make_server(config, name=f"gw{n}", start=False).start("--role", "gateway")
                    for n in range(2)]
        traffic = Traffic(gateways).start()
        try:
            traffic.wait_for(500)
            gateways[0].kill()  # kill -9, mid-traffic
            traffic.wait_for(len(traffic.acked) + 300)
            gateways[0].start("--role", "gateway")
            pipeline.kill()  # mid-batch: loading and delivering all the time
            pipeline.start("--role", "pipeline")
            cluster.nodes[2].kill()  # R3: the two others keep accepting
            traffic.wait_for(len(traffic.acked) + 500)
        finally:
            traffic.stop()
        assert traffic.statuses.get(200)
        assert set(traffic.statuses) <= {200, 503}, traffic.statuses

        def ids_in_warehouse() -> list[str]:
            out = pipeline.run_cli("query", "SELECT id FROM web.fault", "--format", "json",
                                   "--all")
            return [row["id"] for row in json.loads(out.stdout)]

        eventually(lambda: traffic.acked <= set(ids_in_warehouse()), timeout=120)
        loaded = ids_in_warehouse()
        assert len(loaded) == len(set(loaded)), "a message was loaded twice"
        eventually(lambda: traffic.acked <= set(receiver.accepted_ids()), timeout=120)
    finally:
        receiver.stop()
