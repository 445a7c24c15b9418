"""Identity resolution for the Profile API, computed from the load ledger when asked.

Identifiers (Segment's "external ids") are `user_id` (userId), `anonymous_id` (anonymousId) and
`email` (traits.email, context.traits.email or properties.email; lowercased). Every loaded call
but alias (which Segment does not use to merge profiles) links the identifiers it carries, so
an identify with both userId and anonymousId stitches the anonymous history to the user.

Rules, after Segment's defaults: blocked values (`^[0-]*$`, `-1`, `null`, `undefined`,
`anonymous`) are ignored; a profile holds at most one user_id, so when a call would merge two
profiles with different user_ids its lowest-priority identifier (user_id, then email, then
anonymous_id) is dropped until it would not; a profile stops growing at `MAX_IDENTIFIERS`.
Calls are replayed in the order their identifier combination was first received, so the
answer does not depend on when it is asked. A call belongs to the profile of its
highest-priority identifier.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from trackd.warehouse.store import Reader

ID_TYPES = ("user_id", "anonymous_id", "email")
PRIORITY = {"user_id": 0, "email": 1, "anonymous_id": 2}
MAX_IDENTIFIERS = 1000
MAX_ROUNDS = 20
BLOCKED_PATTERN = r"[0-]*|-1|null|undefined|anonymous"  # also used by the loader's SQL
_BLOCKED = re.compile(BLOCKED_PATTERN, re.IGNORECASE)

Identifier = tuple[str, str]  # (type, value)


def usable(value: object) -> bool:
    return isinstance(value, str) and bool(value) and _BLOCKED.fullmatch(value) is None


def _email(message: dict[str, Any]) -> str | None:
    candidates = [message.get("traits"), (message.get("context") or {}).get("traits"),
                  message.get("properties")]
    for holder in candidates:
        if isinstance(holder, dict):
            value = holder.get("email")
            if isinstance(value, str) and "@" in value:
                return value.strip().lower()
    return None


def identifiers(message: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(user_id, anonymous_id, email) a message carries, each None when absent or blocked."""
    user_id = message.get("userId")
    anonymous_id = message.get("anonymousId")
    email = _email(message)
    return (str(user_id) if usable(user_id) else None,
            str(anonymous_id) if usable(anonymous_id) else None,
            email if usable(email) else None)


def owner(ids: Iterable[Identifier]) -> Identifier | None:
    """The identifier a call is filed under: its highest-priority one."""
    present = sorted(ids, key=lambda i: (PRIORITY[i[0]], i[1]))
    return present[0] if present else None


@dataclass
class Profile:
    """One resolved profile: its identifiers and a stable `segment_id`."""

    identifiers: set[Identifier]
    segment_id: str

    def values(self, id_type: str) -> list[str]:
        return sorted(v for t, v in self.identifiers if t == id_type)


class _Graph:
    """Union-find over identifiers with at most one user_id per set."""

    def __init__(self) -> None:
        self.parent: dict[Identifier, Identifier] = {}
        self.user: dict[Identifier, str] = {}

    def find(self, node: Identifier) -> Identifier:
        self.parent.setdefault(node, node)
        root = node
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[node] != root:
            self.parent[node], node = root, self.parent[node]
        return root

    def link(self, ids: list[Identifier]) -> None:
        ids = sorted(ids, key=lambda i: (PRIORITY[i[0]], i[1]))
        while len(ids) > 1:
            roots = {self.find(i) for i in ids}
            users = {self.user[r] for r in roots if r in self.user}
            users |= {v for t, v in ids if t == "user_id"}
            if len(users) <= 1:
                break
            ids.pop()
        if not ids:
            return
        first = self.find(ids[0])
        user = next((v for t, v in ids if t == "user_id"), None) or self.user.get(first)
        for other in ids[1:]:
            root = self.find(other)
            if root != first:
                user = user or self.user.get(root)
                self.parent[root] = first
                self.user.pop(root, None)
        if user is not None:
            self.user[first] = user


def _combos(con: Reader, start: Identifier
            ) -> list[tuple[str | None, str | None, str | None]]:
    """Identifier combinations of every call reachable from `start`, first received first."""
    known: set[Identifier] = {start}
    frontier: set[Identifier] = {start}
    combos: dict[tuple[str | None, str | None, str | None], datetime] = {}
    for _ in range(MAX_ROUNDS):
        if not frontier or len(known) > MAX_IDENTIFIERS:
            break
        lists = [[v for t, v in frontier if t == id_type] for id_type in ID_TYPES]
        rows = con.execute(
            "SELECT user_id, anonymous_id, email, min(received_at) FROM _trackd.messages "
            "WHERE type <> 'alias' AND (user_id IN (SELECT unnest(?::VARCHAR[])) "
            "OR anonymous_id IN (SELECT unnest(?::VARCHAR[])) "
            "OR email IN (SELECT unnest(?::VARCHAR[]))) "
            "GROUP BY user_id, anonymous_id, email", lists).fetchall()
        frontier = set()
        for user_id, anonymous_id, email, first in rows:
            combo = (user_id, anonymous_id, email)
            combos[combo] = min(first, combos.get(combo, first))
            for id_type, value in zip(ID_TYPES, combo, strict=True):
                if usable(value) and (id_type, value) not in known:
                    known.add((id_type, value))
                    frontier.add((id_type, value))
    return sorted(combos, key=lambda c: (combos[c], tuple(v or "" for v in c)))


def resolve(con: Reader, id_type: str, value: str) -> Profile | None:
    """The profile holding `id_type:value`, or None when no loaded call carries it."""
    if id_type == "email":
        value = value.strip().lower()
    start = (id_type, value)
    graph = _Graph()
    seen = False
    for combo in _combos(con, start):
        ids = [(t, v) for t, v in zip(ID_TYPES, combo, strict=True) if v is not None
               and usable(v)]
        seen = seen or start in ids
        graph.link(ids)
    if not seen:
        return None
    root = graph.find(start)
    members = {node for node in graph.parent if graph.find(node) == root}
    anchor = min(members, key=lambda i: (PRIORITY[i[0]], i[1]))
    digest = hashlib.blake2b(f"{anchor[0]}:{anchor[1]}".encode(), digest_size=13).hexdigest()
    return Profile(members, "use_" + digest)


def belongs(profile: Profile, user_id: str | None, anonymous_id: str | None,
            email: str | None) -> bool:
    """Whether a call with these identifiers is filed under `profile`."""
    ids = [(t, v) for t, v in zip(ID_TYPES, (user_id, anonymous_id, email), strict=True)
           if v is not None and usable(v)]
    first = owner(ids)
    return first is not None and first in profile.identifiers
