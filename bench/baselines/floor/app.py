"""The design floor: the minimal server of the stack benchmark, with trackd's API around it.

What `shared/reference/stack-bench.md` measured as the fastest durable design, and nothing
more: a raw ASGI app, msgspec Structs for the six call types and the batch envelope, one
receivedAt and a cheap messageId per request, and one writer thread per process doing group
commit into SQLite (WAL, synchronous=FULL, one row per event) with the 200 sent after COMMIT.
It checks the write key (HTTP Basic) and the body size. It has none of trackd's other work:
no per-item errors, no quarantine, no context enrichment, no rate limits, no metrics, no
back-pressure, no log consumers. On the same machine in the same run it shows how fast the
design itself is there, so trackd's share of it separates trackd's costs from the machine's.

Run: uvicorn app:app --workers N --http httptools --loop uvloop --no-access-log
(FLOOR_DB=path/to/events-<pid>.db prefix, FLOOR_WRITE_KEY=key). Reference code: excluded from
the project's ruff and mypy configuration, like the naive baseline.
"""

import asyncio
import base64
import itertools
import os
import queue
import sqlite3
import threading
from datetime import UTC, datetime
from typing import Any, Optional, Union

import msgspec

DB_PREFIX = os.environ.get("FLOOR_DB", "events")
WRITE_KEY = os.environ.get("FLOOR_WRITE_KEY", "wk_bench")
AUTH = b"Basic " + base64.b64encode(f"{WRITE_KEY}:".encode())
MAX_BODY = 500 * 1024
MAX_ROWS = 20000
INSERT = ("INSERT INTO events (message_id, received_at, type, event, user_id, anonymous_id, "
          "body) VALUES (?, ?, ?, ?, ?, ?, ?)")


class Base(msgspec.Struct, kw_only=True, omit_defaults=True):
    userId: Optional[str] = None
    anonymousId: Optional[str] = None
    messageId: Optional[str] = None
    timestamp: Optional[str] = None
    context: Optional[dict[str, Any]] = None
    integrations: Optional[dict[str, Any]] = None
    receivedAt: Optional[datetime] = None

    def __post_init__(self) -> None:
        if not self.userId and not self.anonymousId:
            raise ValueError("userId or anonymousId is required")


class Track(Base, tag="track"):
    event: str
    properties: Optional[dict[str, Any]] = None


class Identify(Base, tag="identify"):
    traits: Optional[dict[str, Any]] = None


class Page(Base, tag="page"):
    name: Optional[str] = None
    properties: Optional[dict[str, Any]] = None


class Screen(Base, tag="screen"):
    name: Optional[str] = None
    properties: Optional[dict[str, Any]] = None


class Group(Base, tag="group"):
    groupId: str
    traits: Optional[dict[str, Any]] = None


class Alias(Base, tag="alias"):
    previousId: str


Message = Union[Track, Identify, Page, Screen, Group, Alias]
KINDS = {"track": Track, "identify": Identify, "page": Page, "screen": Screen, "group": Group,
         "alias": Alias}


class Batch(msgspec.Struct):
    batch: list[Message]


DECODE = {f"/v1/{name}": msgspec.json.Decoder(kind).decode for name, kind in KINDS.items()}
DECODE_BATCH = msgspec.json.Decoder(Batch).decode
ENCODE = msgspec.json.Encoder().encode
_prefix = f"{os.getpid():x}-"
_counter = itertools.count()


def _resolve(futures: list["asyncio.Future[None]"], error: Optional[Exception]) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(error) if error else future.set_result(None)


class GroupCommitter:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.q: "queue.SimpleQueue[tuple[list[tuple[Any, ...]], asyncio.Future[None]]]" = (
            queue.SimpleQueue())
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        c = sqlite3.connect(f"{DB_PREFIX}-{os.getpid()}.db", isolation_level=None,
                            check_same_thread=False)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("PRAGMA synchronous=FULL")
        c.execute("CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, message_id TEXT, "
                  "received_at TEXT, type TEXT, event TEXT, user_id TEXT, anonymous_id TEXT, "
                  "body TEXT)")
        while True:
            rows, fut = self.q.get()
            futures, all_rows = [fut], list(rows)
            while len(all_rows) < MAX_ROWS:  # everything queued -> one transaction
                try:
                    rows, fut = self.q.get_nowait()
                except queue.Empty:
                    break
                all_rows.extend(rows)
                futures.append(fut)
            try:
                c.execute("BEGIN")
                c.executemany(INSERT, all_rows)
                c.execute("COMMIT")
                error = None
            except Exception as exc:  # noqa: BLE001 - reference code
                error = exc
                c.execute("ROLLBACK")
            self.loop.call_soon_threadsafe(_resolve, futures, error)


_committer: Optional[GroupCommitter] = None


def _rows(messages: list[Any]) -> list[tuple[Any, ...]]:
    now = datetime.now(UTC)
    now_text = now.isoformat()
    out = []
    for m in messages:
        m.receivedAt = now
        if not m.messageId:
            m.messageId = f"{_prefix}{next(_counter):010x}"
        out.append((m.messageId, now_text, type(m).__name__.lower(), getattr(m, "event", None),
                    m.userId, m.anonymousId, ENCODE(m).decode()))
    return out


async def _send(send: Any, status: int, body: bytes) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    global _committer
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    decode = DECODE_BATCH if path in ("/v1/batch", "/v1/import") else DECODE.get(path)
    if scope["method"] != "POST" or decode is None:
        return await _send(send, 404, b'{"success":false}')
    if dict(scope["headers"]).get(b"authorization") != AUTH:
        return await _send(send, 401, b'{"success":false,"error":"Invalid write key"}')
    chunks, size = [], 0
    while True:
        event = await receive()
        chunk = event.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return await _send(send, 413, b'{"success":false}')
        chunks.append(chunk)
        if not event.get("more_body"):
            break
    try:
        decoded = decode(b"".join(chunks))
        rows = _rows(decoded.batch if isinstance(decoded, Batch) else [decoded])
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        return await _send(send, 400, ENCODE({"success": False, "error": str(exc)}))
    loop = asyncio.get_running_loop()
    if _committer is None:
        _committer = GroupCommitter(loop)
    fut = loop.create_future()
    _committer.q.put((rows, fut))
    await fut  # 200 only after COMMIT
    await _send(send, 200, b'{"success":true}')
