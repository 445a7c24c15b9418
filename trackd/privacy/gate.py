"""What the gateway asks the privacy rules for each request: a source's policy, whether a
message's subject is suppressed. Built once per gateway worker by the composition root."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

from trackd.privacy.keys import load_keys
from trackd.privacy.policy import Policy, compile_policy
from trackd.privacy.suppression import REFRESH_SECONDS, SuppressionList
from trackd.settings import SourceSettings


class PrivacyGate:
    """Policies by source name and the suppression list of one gateway worker."""

    def __init__(self, sources: tuple[SourceSettings, ...], data_dir: Path,
                 ack: Path | None = None) -> None:
        keys = load_keys(data_dir)
        self.policies: dict[str, Policy] = {}
        for source in sources:
            policy = compile_policy(source.ip, source.pii, keys.pii_hash)
            if policy is not None:
                self.policies[source.name] = policy
        self.suppression = SuppressionList(data_dir, keys, ack)
        self.suppression.refresh()
        self._task: asyncio.Task[None] | None = None

    def suppressing(self) -> bool:
        return bool(self.suppression.hashes)

    def suppressed(self, message: Any) -> bool:
        return isinstance(message, dict) and self.suppression.holds(message)

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
        self._task = asyncio.create_task(self._refresh_forever())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            with contextlib.suppress(OSError, ValueError):
                await asyncio.to_thread(self.suppression.refresh)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value
