"""The record of regulations on a NATS deployment: the `<stream>-regulations` KV bucket.

The same methods as `trackd.privacy.regulations.Regulations` (the file of the SQLite log), so
the executor and the API do not know which runs; any pipeline's admin API lists every
regulation. Keys:

- `reg.<id>`: the regulation (type, subject hashes, status, stores), JSON, changed by
  compare-and-set on its revision;
- `work.<id>`: the subjects' ids until the regulation ends; then every revision of it is
  erased with JetStream's secure delete, so the bucket's files hold no id;
- `open.<id>`: there while the regulation is not ended (what `unfinished` lists);
- `member.<id>`: the pipeline processes, whose local stores each regulation reaches
  (`trackd.privacy.members`); a new regulation records the live ones in its `hosts`;
- `claim.<id>`: which pipeline process runs it. One takes each (a create only one can win);
  the owner renews its claim each time it polls, and a claim not renewed for
  `LEASE_SECONDS` (its process died) is taken over by another (compare-and-set), which runs
  the regulation again from its first unfinished store, as after a crash.

The methods are synchronous, as the file's (the callers run them in a thread): each runs its
coroutine on the event loop given to `attach`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import time
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, TypeVar

import nats.js.errors
from nats.js.kv import KeyValue

from trackd.errors import LogError, LogUnavailable
from trackd.messages.enrich import iso
from trackd.privacy.members import LOCAL, live_members
from trackd.privacy.regulations import DONE, Work
from trackd.privacy.shared import FAILURES, SharedState

LEASE_SECONDS = 30.0
POLL_SECONDS = 1.0  # how often a pipeline looks for regulations another one recorded
CALL_TIMEOUT = 60.0
T = TypeVar("T")


class KvRegulations:
    """The regulations bucket, through `shared`."""

    poll = POLL_SECONDS

    def __init__(self, shared: SharedState) -> None:
        self.shared = shared
        self.owner = uuid.uuid4().hex
        self.host: str | None = None  # named in the local stores' status (`members`)
        self._loop: asyncio.AbstractEventLoop | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def close(self) -> None:
        pass  # the connection is the SharedState's

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run on the loop; NATS not answering is LogUnavailable (the API's 503)."""
        assert self._loop is not None, "KvRegulations.attach was not called"
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(CALL_TIMEOUT)
        except (*FAILURES, concurrent.futures.TimeoutError) as exc:
            future.cancel()
            raise LogUnavailable(f"the shared regulations cannot be read: "
                                 f"{exc or type(exc).__name__}") from None

    # -- the Regulations interface -----------------------------------------------------------
    def create(self, regulation_type: str, subject_type: str, ids: dict[str, list[str]],
               hashes: list[str], sources: list[str] | None, stores: list[str]) -> str:
        return self._call(self._create(regulation_type, subject_type, ids, hashes, sources,
                                       stores))

    def unfinished(self) -> list[Work]:
        return self._call(self._unfinished())

    def set_subject_ids(self, regulation_id: str, ids: dict[str, list[str]]) -> None:
        self._call(self._put(f"work.{regulation_id}", ids))

    def set_status(self, regulation_id: str, status: str) -> None:
        def change(doc: dict[str, Any]) -> None:
            doc["status"] = status

        self._call(self._modify(regulation_id, change))

    def set_store(self, regulation_id: str, name: str, status: str, rows: int = 0,
                  error: str | None = None) -> None:
        def change(doc: dict[str, Any]) -> None:
            for store in doc["stores"]:
                if store["name"] == name:
                    store.update(status=status, rows=max(store["rows"], rows))
                    if self.host is not None and name in LOCAL:
                        store["host"] = self.host
                    store.pop("error", None)
                    if error:
                        store["error"] = error

        self._call(self._modify(regulation_id, change))

    def finish(self, regulation_id: str, status: str) -> None:
        self._call(self._finish(regulation_id, status))

    def get(self, regulation_id: str) -> dict[str, Any] | None:
        found = self._call(self._get(regulation_id))
        return None if found is None else _public(found[0])

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        return self._call(self._recent(limit))

    # -- on the loop -------------------------------------------------------------------------
    async def _kv(self) -> KeyValue:
        return await self.shared.regulations_bucket()

    async def _create(self, regulation_type: str, subject_type: str,
                      ids: dict[str, list[str]], hashes: list[str],
                      sources: list[str] | None, stores: list[str]) -> str:
        regulation_id = uuid.uuid4().hex[:20]
        kv = await self._kv()
        # the pipeline hosts whose own files it erases (a suppression waits for none)
        hosts = [{**m, "status": "INITIALIZED"} for m in await live_members(kv)
                 if set(stores) & set(LOCAL)]
        await kv.put(f"work.{regulation_id}", json.dumps(ids).encode())
        await kv.put(f"reg.{regulation_id}", json.dumps({
            "id": regulation_id, "regulationType": regulation_type,
            "subjectType": subject_type, "subjects": hashes, "subjectCount": len(hashes),
            "sources": sources, "status": "INITIALIZED",
            "createdAt": iso(datetime.now(UTC)), "finishedAt": None, "seq": time.time_ns(),
            "stores": [{"name": n, "status": "INITIALIZED", "rows": 0} for n in stores],
            "hosts": hosts,
        }).encode())
        await kv.put(f"open.{regulation_id}", b"1")
        return regulation_id

    async def _get(self, regulation_id: str) -> tuple[dict[str, Any], int] | None:
        kv = await self._kv()
        try:
            entry = await kv.get(f"reg.{regulation_id}")
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return json.loads(entry.value), entry.revision or 0

    async def _put(self, key: str, doc: Any) -> None:
        await (await self._kv()).put(key, json.dumps(doc).encode())

    async def _modify(self, regulation_id: str, change: Callable[[dict[str, Any]], None]
                      ) -> None:
        kv = await self._kv()
        while True:
            found = await self._get(regulation_id)
            if found is None:
                raise LogError(f"regulation {regulation_id} is not in the shared record")
            doc, revision = found
            change(doc)
            try:
                await kv.update(f"reg.{regulation_id}", json.dumps(doc).encode(),
                                last=revision)
                return
            except nats.js.errors.KeyWrongLastSequenceError:
                continue

    async def _keys(self, prefix: str) -> list[str]:
        kv = await self._kv()
        try:
            keys = await kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        return [k[len(prefix) + 1:] for k in keys if k.startswith(prefix + ".")]

    async def _unfinished(self) -> list[Work]:
        out: list[tuple[int, Work]] = []
        for regulation_id in await self._keys("open"):
            found = await self._get(regulation_id)
            if found is None or found[0]["status"] in DONE:
                continue
            if not await self._claim(regulation_id):
                continue
            doc = found[0]
            kv = await self._kv()
            try:
                ids = json.loads((await kv.get(f"work.{regulation_id}")).value or b"{}")
            except nats.js.errors.KeyNotFoundError:
                continue
            out.append((doc.get("seq", 0), Work(
                regulation_id, doc["regulationType"], doc["subjectType"], ids, doc["sources"],
                [(s["name"], s["status"]) for s in doc["stores"]])))
        out.sort(key=lambda pair: pair[0])  # oldest first
        return [work for _seq, work in out]

    async def _claim(self, regulation_id: str) -> bool:
        """Take (or renew) the claim on a regulation; whether this process runs it."""
        kv = await self._kv()
        key = f"claim.{regulation_id}"
        mine = json.dumps({"owner": self.owner, "at": time.time()}).encode()
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            try:
                await kv.create(key, mine)
                return True
            except nats.js.errors.KeyWrongLastSequenceError:
                return False  # another pipeline won it
        held = json.loads(entry.value or b"{}")
        if held.get("owner") != self.owner and time.time() - held.get("at", 0) < LEASE_SECONDS:
            return False
        try:
            await kv.update(key, mine, last=entry.revision)
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            return False

    async def _finish(self, regulation_id: str, status: str) -> None:
        def change(doc: dict[str, Any]) -> None:
            doc["status"] = status
            doc["finishedAt"] = iso(datetime.now(UTC))

        await self._modify(regulation_id, change)
        kv = await self._kv()
        await self._erase_key(kv, f"work.{regulation_id}")
        for key in (f"open.{regulation_id}", f"claim.{regulation_id}"):
            await kv.purge(key)

    async def _erase_key(self, kv: KeyValue, key: str) -> None:
        """Every revision of `key`, overwritten on the server (JetStream's secure delete)."""
        try:
            history = await kv.history(key)
        except nats.js.errors.NoKeysError:
            return
        nc = await self.shared.client()
        stream = f"KV_{self.shared.stream}-regulations"
        for entry in history:
            reply = await nc.request(f"$JS.API.STREAM.MSG.DELETE.{stream}", json.dumps(
                {"seq": entry.revision, "no_erase": False}).encode(), timeout=10)
            answer = json.loads(reply.data)
            if answer.get("error") and answer["error"].get("err_code") != 10037:
                raise LogError(f"could not erase a regulation's ids: {answer['error']}")

    async def _recent(self, limit: int) -> list[dict[str, Any]]:
        docs = [found[0] for regulation_id in await self._keys("reg")
                if (found := await self._get(regulation_id)) is not None]
        docs.sort(key=lambda d: d.get("seq", 0), reverse=True)
        return [_public(d) for d in docs[:limit]]


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a record (as the file's `get`), with the pipeline hosts' part."""
    shown = {key: doc[key] for key in ("id", "regulationType", "subjectType", "subjectCount",
                                       "status", "createdAt", "finishedAt", "stores")}
    shown["hosts"] = [{k: v for k, v in host.items() if k != "id"}
                      for host in doc.get("hosts", [])]
    return shown
