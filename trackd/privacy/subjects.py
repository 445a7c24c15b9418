"""Which stored messages belong to a regulation's subjects.

`Subjects` holds the user ids and anonymous ids to delete; a message belongs to them when its
`userId`, `anonymousId` or `previousId` (an alias) is one of them. `widen` adds the anonymous
ids a deleted user's messages carried (identify, alias, any call with both ids): Segment's
identity graph, so a user's anonymous history goes with them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

_decode = msgspec.json.Decoder().decode
SHORT_ID = 8  # shorter ids are looked for in files as JSON strings ("u1"), not bare bytes


@dataclass
class Subjects:
    user_ids: set[str] = field(default_factory=set)
    anonymous_ids: set[str] = field(default_factory=set)
    sources: set[str] | None = None  # None: every source

    @classmethod
    def of(cls, subject_type: str, ids: Iterable[str],
           sources: Iterable[str] | None = None) -> Subjects:
        chosen = set(ids)
        wanted = None if sources is None else set(sources)
        if subject_type == "USER_ID":
            return cls(user_ids=chosen, sources=wanted)
        return cls(anonymous_ids=chosen, sources=wanted)

    def all_ids(self) -> set[str]:
        return self.user_ids | self.anonymous_ids

    def in_source(self, source: str) -> bool:
        return self.sources is None or source in self.sources

    def holds(self, message: Any) -> bool:
        """Whether a decoded message is one of the subjects'."""
        if not isinstance(message, dict):
            return False
        ids = self.all_ids()
        for key in ("userId", "anonymousId", "previousId"):
            value = message.get(key)
            if value is not None and not isinstance(value, dict | list) and str(value) in ids:
                return True
        return False

    def holds_bytes(self, body: bytes) -> bool:
        """Whether a stored message (JSON bytes) is one of the subjects'; a body that is not
        JSON but holds an id's bytes counts as theirs (nothing of theirs may stay)."""
        if not self.pattern().search(body):
            return False
        try:
            return self.holds(_decode(body))
        except msgspec.DecodeError:
            return True

    def widen(self, message: Any) -> bool:
        """Add the anonymous id (or alias' previous id) linked to a deleted user by this
        message; returns whether anything was added."""
        if not isinstance(message, dict) or not self.user_ids:
            return False
        user = message.get("userId")
        if user is None or str(user) not in self.user_ids:
            return False
        added = False
        for key in ("anonymousId", "previousId"):
            value = message.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and str(value) \
                    and str(value) not in self.all_ids():
                self.anonymous_ids.add(str(value))
                added = True
        return added

    def pattern(self) -> re.Pattern[bytes]:
        """One regex finding any id's bytes in a file or a body (cheap pre-filter)."""
        key = tuple(sorted(self.all_ids()))
        if getattr(self, "_key", None) != key:
            self._key = key
            self._pattern = re.compile(b"|".join(re.escape(n) for n in needles(key)) or b"(?!)")
        return self._pattern


def needles(ids: Iterable[str]) -> list[bytes]:
    """What a byte scan looks for: each id's UTF-8 bytes; a short id (which could match by
    chance inside anything) as a JSON string, quotes included."""
    out = []
    for value in ids:
        raw = value.encode()
        out.append(raw if len(value) >= SHORT_ID else msgspec.json.encode(value))
    return sorted(set(out), key=len, reverse=True)
