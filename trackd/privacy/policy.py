"""Per-source IP and PII rules, applied to each accepted message before it reaches the log.

```toml
[[sources]]
ip = "truncate"                                          # keep | truncate | drop
pii = [{ path = "context.traits.email", action = "hash" }, # hash | drop
       { path = "properties.card_number", action = "drop" }]
```

- `ip`: `context.ip` kept, truncated (IPv4 to its /24, IPv6 to its /48; a value that is no
  address is dropped) or dropped.
- `pii`: the value at a dotted path is replaced by its keyed hash (BLAKE2b with the data
  dir's key, hex: stable, so joins and counts still work) or removed. A path that is absent is
  left alone; a non-string value is hashed as its JSON text.

`check_source` validates the settings at start-up (one line naming the key); a source without
rules gets no `Policy` at all, so the gateway's per-message cost is one `None` test.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any

from trackd.errors import ConfigError

IP_ACTIONS = ("keep", "truncate", "drop")
PII_ACTIONS = ("hash", "drop")
# Fields trackd itself needs intact: ids that deletion and dedup match on, and its stamps.
RESERVED = ("type", "messageId", "receivedAt", "sentAt", "timestamp", "originalTimestamp",
            "version", "userId", "anonymousId", "previousId", "groupId", "writeKey")
_SEGMENT = re.compile(r"^[^.\s]+$")


def check_source(where: str, ip: str, pii: list[dict[str, str]], retention_days: float) -> None:
    """Raise ConfigError naming the first bad key of a source's privacy settings."""
    if ip not in IP_ACTIONS:
        raise ConfigError(f"{where}.ip: must be one of {', '.join(IP_ACTIONS)}, got {ip!r}")
    if retention_days < 0:
        raise ConfigError(f"{where}.retention_days: must not be negative (0: kept forever)")
    seen: set[str] = set()
    for index, rule in enumerate(pii):
        at = f"{where}.pii[{index}]"
        unknown = sorted(set(rule) - {"path", "action"})
        if unknown:
            raise ConfigError(f"{at}: unknown key {unknown[0]!r} (expected path and action)")
        path, action = rule.get("path", ""), rule.get("action", "")
        if action not in PII_ACTIONS:
            raise ConfigError(f"{at}.action: must be hash or drop, got {action!r}")
        parts = path.split(".")
        if not path or not all(_SEGMENT.match(p) for p in parts):
            raise ConfigError(f"{at}.path: must be a dotted path such as "
                              f"context.traits.email, got {path!r}")
        if parts[0] in RESERVED:
            raise ConfigError(f"{at}.path: {parts[0]} is needed by trackd itself and cannot "
                              f"be hashed or dropped, got {path!r}")
        if path in seen:
            raise ConfigError(f"{at}.path: {path!r} is listed twice")
        seen.add(path)


@functools.lru_cache(maxsize=4096)  # a batch's messages share their address
def truncate_ip(value: str) -> str | None:
    """IPv4 to its /24 and IPv6 to its /48 (an IPv4-mapped IPv6 as IPv4); None if no address."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False).network_address)


@dataclass(frozen=True)
class Policy:
    """One source's rules, compiled: `apply(message)` changes a message dict in place."""

    ip: str
    rules: tuple[tuple[tuple[str, ...], str], ...]  # (path parts, action)
    hash_text: Any  # Callable[[str], str]: the keyed hash

    def apply(self, message: dict[str, Any]) -> None:
        if self.ip != "keep":
            context = message.get("context")
            if isinstance(context, dict) and "ip" in context:
                value = context["ip"]
                kept = truncate_ip(value) if self.ip == "truncate" and isinstance(
                    value, str) else None
                if kept is None:
                    del context["ip"]
                else:
                    context["ip"] = kept
        for parts, action in self.rules:
            holder: Any = message
            for part in parts[:-1]:
                holder = holder.get(part) if isinstance(holder, dict) else None
                if holder is None:
                    break
            if not isinstance(holder, dict) or parts[-1] not in holder:
                continue
            if action == "drop":
                del holder[parts[-1]]
            else:
                value = holder[parts[-1]]
                text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
                holder[parts[-1]] = self.hash_text(text)


def compile_policy(ip: str, pii: list[dict[str, str]], hash_text: Any) -> Policy | None:
    """The source's policy, or None when it keeps everything (the common case)."""
    if ip == "keep" and not pii:
        return None
    rules = tuple((tuple(rule["path"].split(".")), rule["action"]) for rule in pii)
    return Policy(ip, rules, hash_text)
