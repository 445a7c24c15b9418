"""What the gateway asks the privacy rules for each request: a source's policy, whether a
message's subject is suppressed. Built once per gateway worker by the composition root.

On the SQLite log the keys and the suppression list are files of the data dir. On NATS they
are the deployment's shared state (`trackd.privacy.shared`): `start` reads them, retrying
while a new replicated bucket has no leader yet, and the worker is not ready (and refuses
messages with 503) until it has them; it then reads the list every `REFRESH_SECONDS`, and
when a read fails it keeps the last list it read (and says so in the log) rather than refusing
traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trackd.observability import get_logger
from trackd.privacy.keys import Keys, load_keys
from trackd.privacy.policy import Policy, compile_policy
from trackd.privacy.suppression import REFRESH_SECONDS, SuppressionList
from trackd.settings import SourceSettings

if TYPE_CHECKING:
    from trackd.privacy.shared import SharedState

log = get_logger("privacy")


class PrivacyGate:
    """Policies by source name and the suppression list of one gateway worker."""

    def __init__(self, sources: tuple[SourceSettings, ...], data_dir: Path,
                 ack: Path | None = None, shared: SharedState | None = None) -> None:
        self.sources = sources
        self.data_dir = data_dir
        self.shared = shared
        self.policies: dict[str, Policy] = {}
        self.suppression: SuppressionList | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        if shared is None:
            keys = load_keys(data_dir)
            self._compile(keys)
            self.suppression = SuppressionList(data_dir, keys, ack)
            self.suppression.refresh()

    @property
    def loaded(self) -> bool:
        """Whether the keys and the suppression list are here (on NATS: read once)."""
        return self.suppression is not None

    def _compile(self, keys: Keys) -> None:
        for source in self.sources:
            policy = compile_policy(source.ip, source.pii, keys.pii_hash)
            if policy is not None:
                self.policies[source.name] = policy

    def suppressing(self) -> bool:
        return self.suppression is not None and bool(self.suppression.hashes)

    def suppressed(self, message: Any) -> bool:
        return isinstance(message, dict) and self.suppression is not None \
            and self.suppression.holds(message)

    def scrub_refused(self, source: str, message: Any, raw: bytes) -> bytes:
        """A refused message's bytes for the quarantine, with the source's policy applied."""
        policy = self.policies.get(source)
        if policy is None or not isinstance(message, dict):
            return raw
        copy = _deep_copy(message)
        policy.apply(copy)
        try:
            return json.dumps(copy, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            return raw

    async def start(self) -> None:
        shared = self.shared
        if shared is None:
            self._task = asyncio.create_task(self._refresh_forever())
            return
        loaded = await shared.connect(self._load)
        self._task = asyncio.create_task(self._follow(shared, loaded))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.shared is not None:
            await self.shared.close()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            with contextlib.suppress(OSError, ValueError):
                assert self.suppression is not None
                await asyncio.to_thread(self.suppression.refresh)

    async def _load(self) -> None:
        """Read the shared keys and list (raises while NATS cannot answer)."""
        assert self.shared is not None
        keys = await self.shared.keys()
        version, hashes = await self.shared.suppressed()
        self._compile(keys)
        suppression = SuppressionList(self.data_dir, keys)
        suppression.apply(version, hashes)
        self.suppression = suppression

    async def _follow(self, shared: SharedState, loaded: bool) -> None:
        """Load (if `start` could not), then read the shared list every while; a failed read
        keeps the last list."""
        from trackd.privacy.shared import FAILURES
        from trackd.privacy.shared import REFRESH_SECONDS as SHARED_REFRESH

        if not loaded:
            await shared.load_forever(self._load)
            log.info("the shared privacy state is read: taking messages")
        while True:
            await asyncio.sleep(SHARED_REFRESH)
            try:
                version, hashes = await shared.suppressed()
            except FAILURES as exc:
                if not self._failing:
                    log.warning("the shared suppression list cannot be read: keeping the last "
                                "one read", extra={"error": str(exc) or type(exc).__name__})
                self._failing = True
                continue
            if self._failing:
                log.info("the shared suppression list can be read again")
            self._failing = False
            assert self.suppression is not None
            self.suppression.apply(version, hashes)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
