"""The pipeline hosts a regulation must reach, on the NATS log.

Each pipeline host keeps local stores in its own data dir (archive files, destination ledgers
and dead letters, the console's buffers): erasing the stream and the warehouse once is not
enough. So every pipeline process is a member, in the regulations bucket:

- `member.<id>`: {host, at}, renewed every `BEAT_SECONDS`; a member whose `at` is older than
  `LEASE_SECONDS` is gone. The id is kept in the data dir
  (`privacy/member`), so a process restarted on the same data dir is the same member.
- A new deletion records the live members in its `hosts` (`regulations_kv`).
- Each recorded member that is not the regulation's claimant runs its local stores
  (`LOCAL`) once the shared stores before them are done (the ids are widened by then), and
  reports its per-store status in its entry of `hosts`. The claimant runs its own in order,
  as on one host, and reports them the same way.
- The claimant ends the regulation only once every recorded member has reported. A member
  gone before reporting keeps the regulation RUNNING (it runs its part when it returns), for
  up to `GONE_SECONDS`; past that its entry is FAILED, naming the host, and the regulation
  ends PARTIAL_SUCCESS, never FINISHED.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import nats.js.errors

from trackd.observability import get_logger
from trackd.privacy.keys import privacy_dir
from trackd.privacy.regulations import DONE, Work
from trackd.privacy.shared import FAILURES

if TYPE_CHECKING:
    from nats.js.kv import KeyValue

    from trackd.privacy.regulations_kv import KvRegulations

log = get_logger("privacy")
BEAT_SECONDS = 2.0
LEASE_SECONDS = 10.0
GONE_SECONDS = 600.0
WAIT_SECONDS = 1.0
LOCAL = ("archive", "memory", "ledgers", "files")
SHARED_FIRST = ("suppression", "log", "warehouse")  # what a member waits for
REPORTED = ("FINISHED", "FAILED")


def member_id(data_dir: Path) -> str:
    """This data dir's member id, made once."""
    path = privacy_dir(data_dir) / "member"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.write_text(uuid.uuid4().hex)
        return path.read_text().strip()


async def live_members(kv: KeyValue) -> list[dict[str, str]]:
    """The members whose lease holds now: [{id, host}]."""
    out = []
    for member, doc in (await _members(kv)).items():
        if time.time() - doc.get("at", 0) < LEASE_SECONDS:
            out.append({"id": member, "host": str(doc.get("host", member))})
    return out


async def _members(kv: KeyValue) -> dict[str, dict[str, Any]]:
    try:
        keys = await kv.keys()
    except nats.js.errors.NoKeysError:
        return {}
    out = {}
    for key in keys:
        if key.startswith("member."):
            try:
                out[key[len("member."):]] = json.loads((await kv.get(key)).value or b"{}")
            except nats.js.errors.KeyNotFoundError:
                continue
    return out


class Members:
    """This pipeline process as a member, and the claimant's wait for the others."""

    def __init__(self, regulations: KvRegulations, data_dir: Path) -> None:
        self.regulations = regulations
        self.id = member_id(data_dir)
        self.host = f"{socket.gethostname()}:{data_dir}"
        self.stopping = False  # the process stops: `beat_forever` ends

    async def beat(self) -> None:
        kv = await self.regulations.shared.regulations_bucket()
        await kv.put(f"member.{self.id}", json.dumps(
            {"host": self.host, "at": time.time()}).encode())

    async def beat_forever(self) -> None:
        while not self.stopping:
            try:
                await self.beat()
            except FAILURES as exc:
                log.warning("the pipeline's membership cannot be renewed now",
                            extra={"error": str(exc) or type(exc).__name__})
            await asyncio.sleep(BEAT_SECONDS)

    async def pending(self) -> list[Work]:
        """Regulations this member has to run its local stores for, now."""
        regs = self.regulations
        kv = await regs.shared.regulations_bucket()
        out = []
        for regulation_id in await regs._keys("open"):
            found = await regs._get(regulation_id)
            if found is None or found[0]["status"] in DONE:
                continue
            doc = found[0]
            mine = [h for h in doc.get("hosts", []) if h["id"] == self.id]
            if not mine or mine[0]["status"] in REPORTED:
                continue
            if any(s["name"] in SHARED_FIRST and s["status"] in ("INITIALIZED", "RUNNING")
                   for s in doc["stores"]):
                continue  # the ids are widened and the log erased first
            try:
                claim = json.loads((await kv.get(f"claim.{regulation_id}")).value or b"{}")
                ids = json.loads((await kv.get(f"work.{regulation_id}")).value or b"{}")
            except nats.js.errors.KeyNotFoundError:
                continue
            if claim.get("owner") == regs.owner:
                continue  # the executor here runs them, in order
            out.append(Work(regulation_id, doc["regulationType"], doc["subjectType"], ids,
                            doc["sources"], []))
        return out

    async def report(self, regulation_id: str, status: str,
                     stores: list[dict[str, Any]]) -> None:
        """This member's part of a regulation: its status and its local stores'."""
        def change(doc: dict[str, Any]) -> None:
            hosts = doc.setdefault("hosts", [])
            entry = next((h for h in hosts if h["id"] == self.id), None)
            if entry is None:  # joined after the regulation was recorded
                entry = {"id": self.id, "host": self.host}
                hosts.append(entry)
            entry.update(status=status, stores=stores)
            entry.pop("error", None)

        await self.regulations._modify(regulation_id, change)

    async def wait(self, regulation_id: str) -> int:
        """Return once every other recorded member has reported (or is gone for good); how
        many hosts failed."""
        regs = self.regulations
        kv = await regs.shared.regulations_bucket()
        while True:
            found = await regs._get(regulation_id)
            if found is None:
                return 0
            hosts = found[0].get("hosts", [])
            waiting = [h for h in hosts if h["id"] != self.id and h["status"] not in REPORTED]
            if not waiting:
                return sum(1 for h in hosts if h["status"] == "FAILED")
            members = await _members(kv)
            created = found[0].get("seq", 0) / 1e9
            for host in waiting:
                doc = members.get(host["id"], {})
                since = doc.get("at", created)
                if time.time() - since < LEASE_SECONDS:
                    continue  # live: it does its part
                if time.time() - since > GONE_SECONDS:
                    await self._give_up(regulation_id, host["id"], time.time() - since)
            await asyncio.sleep(WAIT_SECONDS)

    async def _give_up(self, regulation_id: str, member: str, gone: float) -> None:
        def change(doc: dict[str, Any]) -> None:
            for host in doc.get("hosts", []):
                if host["id"] == member and host["status"] not in REPORTED:
                    host.update(status="FAILED", error=(
                        f"host {host['host']} gone for {gone:.0f} s before erasing its "
                        "local stores (archive, ledgers, buffers)"))

        log.warning("a pipeline host did not erase its local stores",
                    extra={"regulation": regulation_id, "member": member})
        await self.regulations._modify(regulation_id, change)
