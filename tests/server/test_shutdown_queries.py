"""SIGTERM interrupts running admin queries: shutdown never waits for warehouse.query_timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx

from tests.conftest import Server, eventually
from tests.reliability.helpers import ADMIN, config

BEARER = {"Authorization": f"Bearer {ADMIN}"}
# Ten minutes of query and of in-flight grace: only the interrupt can end this server quickly.
SLOW = config(server_extra="shutdown_timeout = 600",
              extra="[warehouse]\nquery_timeout = 600\n")
HEAVY = ("SELECT count(*) AS n FROM range(10000000) a, range(10000000) b "
         "WHERE a.range + b.range = -1")


def test_sigterm_interrupts_a_heavy_query(make_server: Callable[..., Server]) -> None:
    server = make_server(SLOW)
    with server.client() as client:
        eventually(lambda: client.post("/api/v1/query", json={"sql": "SELECT 1 AS one"},
                                       headers=BEARER).status_code == 200, timeout=60)
    answers: list[httpx.Response] = []

    def heavy() -> None:
        with httpx.Client(base_url=server.url, timeout=600) as client:
            answers.append(client.post("/api/v1/query", json={"sql": HEAVY}, headers=BEARER))

    thread = threading.Thread(target=heavy)
    thread.start()
    time.sleep(3)  # let the query reach DuckDB (the answer below says it did)
    assert server.stop(timeout=120) == 0
    thread.join(30)
    assert answers, "the query got no answer"
    assert answers[0].status_code == 400
    assert answers[0].json()["message"] == ("query interrupted because the server is "
                                            "stopping")
