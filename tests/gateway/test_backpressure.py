"""503 + Retry-After when the log cannot keep up, and while it is shutting down.

At the gateway's level with a real LogWriter (deterministic), and over HTTP against a server
whose writer may hold nothing pending (`max_pending_mb = 0`), hammered by concurrent clients.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from tests.gateway.helpers import QUIET, error_of
from trackd.errors import Unavailable
from trackd.gateway.app import Gateway
from trackd.gateway.ingest import Ingestor
from trackd.log.reader import LogReader
from trackd.log.writer import LogWriter
from trackd.observability import Registry
from trackd.settings import SourceSettings

SOURCES = (SourceSettings(name="web", write_keys=["wk"]),)


def track(message_id: str) -> bytes:
    return json.dumps({"userId": "u", "event": "E", "messageId": message_id}).encode()


def test_log_full_is_503_with_retry_after_and_stores_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        writer = LogWriter(tmp_path / "log" / "gw0.log.db", max_pending_bytes=1)
        (tmp_path / "log").mkdir()
        writer.start(asyncio.get_running_loop())
        ingestor = Ingestor(SOURCES, writer, Registry())
        first = asyncio.ensure_future(ingestor.single("track", track("first"), "wk", None))
        await asyncio.sleep(0)  # `first` now waits for its commit: the log holds bytes
        with pytest.raises(Unavailable) as refused:
            await ingestor.single("track", track("refused"), "wk", None)
        assert refused.value.status == 503
        assert refused.value.error_type == "unavailable"
        assert refused.value.retry_after is not None and refused.value.retry_after >= 1
        with pytest.raises(Unavailable):
            await ingestor.batch(b'{"batch":[{"type":"page","userId":"u",'
                                 b'"messageId":"refused-batch"}]}', "wk", None)
        assert (await first).status == 200
        assert (await ingestor.single("track", track("later"), "wk", None)).status == 200
        await asyncio.to_thread(writer.close)
        with pytest.raises(Unavailable) as closed:
            await ingestor.single("track", track("after-close"), "wk", None)
        assert closed.value.status == 503 and closed.value.retry_after

    asyncio.run(scenario())
    reader = LogReader(tmp_path / "log")
    try:
        assert [r.message_id for r in reader.read("test")] == ["first", "later"]
        assert reader.quarantined() == []
    finally:
        reader.close()


def test_the_gateway_answers_503_with_a_retry_after_header(tmp_path: Path) -> None:
    async def scenario() -> list[tuple[int, dict[bytes, bytes], Any]]:
        (tmp_path / "log").mkdir()
        writer = LogWriter(tmp_path / "log" / "gw0.log.db", max_pending_bytes=1)
        writer.start(asyncio.get_running_loop())
        metrics = Registry()
        gateway = Gateway(Ingestor(SOURCES, writer, metrics), metrics, ready=lambda: True,
                          render_metrics=lambda: "", cors_origins=["*"], trusted_proxies=[])
        answers: list[tuple[int, dict[bytes, bytes], Any]] = []

        async def call(body: bytes) -> None:
            sent: list[dict[str, Any]] = []
            chunks = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> dict[str, Any]:
                return chunks.pop(0) if chunks else {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {"type": "http", "method": "POST", "path": "/v1/track",
                     "headers": [(b"authorization", b"Basic d2s6")], "client": ("1.2.3.4", 5)}
            await gateway(scope, receive, send)
            answers.append((sent[0]["status"], dict(sent[0]["headers"]),
                            json.loads(sent[1]["body"])))

        await asyncio.gather(*(call(track(f"m{i}")) for i in range(5)))
        await asyncio.to_thread(writer.close)
        return answers

    answers = asyncio.run(scenario())
    assert sorted(a[0] for a in answers) == [200, 503, 503, 503, 503]
    for status, headers, body in answers:
        assert headers[b"access-control-allow-origin"] == b"*"
        if status == 503:
            assert int(headers[b"retry-after"]) >= 1
            assert body["error"]["type"] == body["code"] == "unavailable"


def test_a_server_whose_log_cannot_keep_up_answers_503(
        make_server: Callable[..., Server]) -> None:
    """`max_pending_mb = 0`: whatever arrives while a commit is running is refused."""
    server = make_server(config="""
[server]
max_pending_mb = 0

[[sources]]
name = "web"
write_keys = ["wk_web"]
""" + QUIET)
    results: list[tuple[str, int, str | None, str]] = []
    lock = threading.Lock()

    def client(n: int) -> None:
        with httpx.Client(base_url=server.url, auth=("wk_web", ""), timeout=30) as c:
            for i in range(15):
                message_id = f"bp-{n}-{i}"
                r = c.post("/v1/batch", json={"batch": [
                    {"type": "track", "userId": "u", "event": "E", "messageId": message_id,
                     "properties": {"pad": "x" * 2000}}]})
                kind = error_of(r)[0] if r.status_code != 200 else ""
                with lock:
                    results.append((message_id, r.status_code, r.headers.get("retry-after"),
                                    kind))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = {r[1] for r in results}
    assert statuses <= {200, 503}
    assert 503 in statuses, "no request was refused: the log kept up"
    assert 200 in statuses
    reader = LogReader(server.data_dir / "log")
    try:
        stored_ids = {r.message_id for r in reader.read("test", limit=1_000_000)}
    finally:
        reader.close()
    for message_id, status, retry_after, kind in results:
        if status == 503:
            assert kind == "unavailable"
            assert retry_after is not None and int(retry_after) >= 1
            assert message_id not in stored_ids
        else:
            assert message_id in stored_ids
