"""The privacy state of a NATS deployment, shared by every gateway and pipeline on any host.

With `[log] url = "nats://..."` gateways and pipelines share nothing but NATS (and the
warehouse), so what must be equal everywhere lives in two JetStream KV buckets named after the
stream (`[log] stream`), with the stream's `replicas`:

- `<stream>-privacy`: `keys` (the PII key and the subject salt, `trackd.privacy.keys`: made
  once by whichever process needs them first, a create that only one can win) and `suppressed`
  (the suppression list: salted hashes, changed by compare-and-set on its revision);
- `<stream>-regulations`: the regulations record (`trackd.privacy.regulations_kv`).

With the SQLite log these are files of the data dir, as before (`trackd.privacy.keys`,
`trackd.privacy.suppression`, `trackd.privacy.regulations`).

A fresh replicated bucket may have no leader for a moment ("no response from stream"):
`connect` retries every `RETRY_SECONDS` for up to `STARTUP_SECONDS`, and a caller that still
could not read keeps trying in the background (`load_forever`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Callable

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import api
from nats.js.kv import KeyValue

from trackd.observability import get_logger
from trackd.privacy.keys import Keys
from trackd.settings import LogSettings

log = get_logger("privacy")
RETRY_SECONDS = 0.2
STARTUP_SECONDS = 10.0
REFRESH_SECONDS = 0.5  # how often a gateway reads the suppression list
APPLY_SECONDS = 3 * REFRESH_SECONDS  # a new list is applied by every gateway within this
HISTORY = 64  # revisions kept per key of the regulations bucket (erased at the end)
FAILURES = (nats.errors.Error, nats.js.errors.Error, TimeoutError, OSError)


class SharedState:
    """One process's connection to the shared privacy state (connect with `start`)."""

    def __init__(self, settings: LogSettings, *, timeout: float = 5.0) -> None:
        self.settings = settings
        self.stream = settings.stream
        self.timeout = timeout
        self._nc: Client | None = None
        self._privacy: KeyValue | None = None
        self._regulations: KeyValue | None = None
        self._ready = asyncio.Event()
        self._lock = asyncio.Lock()

    async def client(self) -> Client:
        """The connected client (connects on first use)."""
        await self._open()
        assert self._nc is not None
        return self._nc

    async def privacy_bucket(self) -> KeyValue:
        await self._open()
        assert self._privacy is not None
        return self._privacy

    async def regulations_bucket(self) -> KeyValue:
        await self._open()
        assert self._regulations is not None
        return self._regulations

    async def _open(self) -> None:
        if self._regulations is not None:
            return
        async with self._lock:
            if self._nc is None or self._nc.is_closed:
                servers = [s.strip() for s in self.settings.url.split(",") if s.strip()]
                nc = await nats.connect(servers, name="trackd-privacy", connect_timeout=2,
                                        allow_reconnect=True, max_reconnect_attempts=1,
                                        reconnect_time_wait=0.5, error_cb=_quiet)
                nc.options["max_reconnect_attempts"] = -1  # once connected, for ever
                self._nc = nc
            js = self._nc.jetstream(timeout=self.timeout)
            if self._privacy is None:
                self._privacy = await _bucket(js, f"{self.stream}-privacy", 1,
                                              self.settings.replicas)
            self._regulations = await _bucket(js, f"{self.stream}-regulations", HISTORY,
                                              self.settings.replicas)

    async def close(self) -> None:
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):  # NATS gone: nothing to tell it
                await self._nc.close()

    async def keys(self) -> Keys:
        """The deployment's keys, made by the first process that needs them."""
        kv = await self.privacy_bucket()
        try:
            entry = await kv.get("keys")
        except nats.js.errors.KeyNotFoundError:
            fresh = json.dumps({"pii_key": secrets.token_hex(32),
                                "salt": secrets.token_hex(32)}).encode()
            # another process may have made them first: then theirs are the keys
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                await kv.create("keys", fresh)
            entry = await kv.get("keys")
        doc = json.loads(entry.value or b"{}")
        return Keys(bytes.fromhex(doc["pii_key"]), bytes.fromhex(doc["salt"]))

    async def suppressed(self) -> tuple[int, set[str]]:
        """(revision, hashes) of the suppression list; (0, empty) when there is none yet."""
        kv = await self.privacy_bucket()
        try:
            entry = await kv.get("suppressed")
        except nats.js.errors.KeyNotFoundError:
            return 0, set()
        return entry.revision or 0, set(json.loads(entry.value or b"[]"))

    async def change_suppressed(self, change: Callable[[set[str]], set[str]]) -> int:
        """Replace the list by `change(current)`, compare-and-set (another pipeline may change
        it at the same time); returns the new revision."""
        kv = await self.privacy_bucket()
        while True:
            revision, current = await self.suppressed()
            value = json.dumps(sorted(change(current))).encode()
            try:
                if revision:
                    return await kv.update("suppressed", value, last=revision)
                return await kv.create("suppressed", value)
            except nats.js.errors.KeyWrongLastSequenceError:
                continue  # changed meanwhile: apply ours to theirs

    async def connect(self, load: Callable[[], object]) -> bool:
        """Call `load` (an awaitable reading the state) until it succeeds, every
        `RETRY_SECONDS` for up to `STARTUP_SECONDS`; returns whether it did."""
        deadline = asyncio.get_running_loop().time() + STARTUP_SECONDS
        while True:
            if await self._try(load):
                return True
            if asyncio.get_running_loop().time() >= deadline:
                return False
            await asyncio.sleep(RETRY_SECONDS)

    async def load_forever(self, load: Callable[[], object]) -> None:
        """Call `load` until it succeeds (after `connect` gave up)."""
        while not await self._try(load):
            await asyncio.sleep(RETRY_SECONDS * 5)

    async def _try(self, load: Callable[[], object]) -> bool:
        try:
            result = load()
            if asyncio.iscoroutine(result):
                await result
            return True
        except FAILURES as exc:
            log.warning("the shared privacy state cannot be read yet",
                        extra={"error": str(exc) or type(exc).__name__})
            return False


async def _quiet(exc: Exception) -> None:
    """Connection errors: the callers say in the log what they could not read."""


async def _bucket(js: nats.js.JetStreamContext, name: str, history: int,
                  replicas: int) -> KeyValue:
    """The bucket, made if missing (by any process: the same config is no conflict).

    Made as `create_key_value` makes one, except that its stream allows deleting one message
    (a KV bucket's stream denies it, and that cannot be changed later): the regulations' ids
    are erased with JetStream's secure delete of each revision (`regulations_kv`)."""
    try:
        return await js.key_value(name)
    except nats.js.errors.BucketNotFoundError:
        pass
    config = api.StreamConfig(
        name=f"KV_{name}", subjects=[f"$KV.{name}.>"], allow_direct=True,
        allow_rollup_hdrs=True, deny_delete=False, discard=api.DiscardPolicy.NEW,
        duplicate_window=120, max_consumers=-1, max_msgs=-1, max_msgs_per_subject=history,
        num_replicas=replicas, storage=api.StorageType.FILE)
    with contextlib.suppress(nats.js.errors.BadRequestError):  # made meanwhile
        await js.add_stream(config)
    return await js.key_value(name)
