"""Which messages a destination receives: its sources, end-user consent, `integrations`.

Checked in this order (Segment spec 3.10: consent first, then integrations), each a pure
function of the message so tests are tables:

1. sources: a destination with a `sources` list receives only those sources' messages;
2. consent: a destination with `consent_categories` receives a message only when
   `context.consent.categoryPreferences` grants every one of them (`true`). A message with no
   consent object (or an empty one) is not gated; an empty `categoryPreferences` grants nothing;
3. integrations: the destination's name looked up case-sensitively; an object value counts as
   enabled, `false` (or null, 0, "") as disabled; a destination not named follows `All`, which
   defaults to true.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Route:
    """What routing needs to know about one destination."""

    name: str
    sources: tuple[str, ...] = ()
    consent_categories: tuple[str, ...] = ()

    @classmethod
    def of(cls, name: str, sources: Sequence[str] = (),
           consent_categories: Sequence[str] = ()) -> Route:
        return cls(name, tuple(sources), tuple(consent_categories))


def _enabled(value: Any) -> bool:
    if isinstance(value, dict):
        return True  # an object carries per-destination options: enabled
    return bool(value)


def integrations_allow(integrations: Any, name: str) -> bool:
    """Segment semantics of the `integrations` object for a destination called `name`."""
    if not isinstance(integrations, Mapping):
        return True
    if name in integrations:
        return _enabled(integrations[name])
    return _enabled(integrations.get("All", True))


def missing_consent(context: Any, categories: Sequence[str]) -> list[str]:
    """The categories a message does not grant; empty when it may be delivered."""
    if not categories or not isinstance(context, Mapping):
        return []
    consent = context.get("consent")
    if not isinstance(consent, Mapping) or not consent:
        return []
    preferences = consent.get("categoryPreferences")
    if not isinstance(preferences, Mapping):
        return []
    return [c for c in categories if preferences.get(c) is not True]


def refusal(message: Mapping[str, Any], source: str, route: Route) -> str | None:
    """Why `route` does not receive `message`, or None when it does."""
    if route.sources and source not in route.sources:
        return f"source {source} is not routed to {route.name}"
    missing = missing_consent(message.get("context"), route.consent_categories)
    if missing:
        return "filtered by end-user consent: " + ", ".join(missing) + " not granted"
    if not integrations_allow(message.get("integrations"), route.name):
        return "disabled by the message's integrations object"
    return None
