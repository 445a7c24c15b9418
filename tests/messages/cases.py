"""The contract's validation rules as a table, shared by the unit tests and the HTTP tests.

Each refused case is (id, path type, message without `type`, exact reason). The same message is
sent to the single endpoint of that type and, with `"type"` added, as a batch item.
"""

from __future__ import annotations

from typing import Any

LONG = "x" * 256
TS = "2024-05-01T12:00:00.000Z"


def props(n: int) -> dict[str, int]:
    return {f"p{i}": i for i in range(n)}


REFUSED: list[tuple[str, str, dict[str, Any], str]] = [
    # userId or anonymousId
    ("no-ids", "track", {"event": "E"}, "Missing required field: userId or anonymousId"),
    ("empty-ids", "identify", {"userId": "", "anonymousId": ""},
     "Missing required field: userId or anonymousId"),
    ("null-ids", "page", {"userId": None, "anonymousId": None},
     "Missing required field: userId or anonymousId"),
    ("userId-long", "identify", {"userId": LONG}, "userId exceeds 255 characters"),
    ("anonymousId-long", "screen", {"anonymousId": LONG},
     "anonymousId exceeds 255 characters"),
    # track's event
    ("event-missing", "track", {"userId": "u"}, "Missing required field: event"),
    ("event-empty", "track", {"userId": "u", "event": ""}, "Missing required field: event"),
    ("event-long", "track", {"userId": "u", "event": "e" * 201},
     "Event name exceeds 200 characters"),
    ("event-dollar", "track", {"userId": "u", "event": "$pageview"},
     "Event name cannot start with '$'"),
    # group and alias
    ("groupId-missing", "group", {"userId": "u"}, "Missing required field: groupId"),
    ("alias-userId-missing", "alias", {"anonymousId": "a", "previousId": "p"},
     "Missing required field: userId"),
    ("alias-previousId-missing", "alias", {"userId": "u"}, "Missing required field: previousId"),
    # object fields
    ("properties-not-object", "track", {"userId": "u", "event": "E", "properties": [1]},
     "properties must be an object"),
    ("page-properties-not-object", "page", {"userId": "u", "properties": "x"},
     "properties must be an object"),
    ("screen-properties-not-object", "screen", {"userId": "u", "properties": 3},
     "properties must be an object"),
    ("traits-not-object", "identify", {"userId": "u", "traits": "vip"},
     "traits must be an object"),
    ("group-traits-not-object", "group", {"userId": "u", "groupId": "g", "traits": [1]},
     "traits must be an object"),
    ("context-not-object", "track", {"userId": "u", "event": "E", "context": "c"},
     "context must be an object"),
    ("integrations-not-object", "identify", {"userId": "u", "integrations": True},
     "integrations must be an object"),
    # properties / traits shape
    ("too-many-properties", "track", {"userId": "u", "event": "E", "properties": props(256)},
     "Too many properties: 256 (max 255)"),
    ("too-many-traits", "identify", {"userId": "u", "traits": props(300)},
     "Too many properties: 300 (max 255)"),
    ("property-name-long", "track", {"userId": "u", "event": "E", "properties": {LONG: 1}},
     "Property name exceeds 255 characters"),
    ("nested-property-name-long", "page",
     {"userId": "u", "properties": {"a": {"b": {LONG: 1}}}},
     "Property name exceeds 255 characters"),
    ("trait-name-long", "group", {"userId": "u", "groupId": "g", "traits": {LONG: 1}},
     "Property name exceeds 255 characters"),
    ("nested-4-levels", "track",
     {"userId": "u", "event": "E", "properties": {"a": {"b": {"c": {"d": 1}}}}},
     "Properties nested deeper than 3 levels"),
    ("traits-nested-4-levels", "identify",
     {"userId": "u", "traits": {"a": {"b": {"c": {"d": 1}}}}},
     "Properties nested deeper than 3 levels"),
    ("object-in-array-4-levels", "track",
     {"userId": "u", "event": "E", "properties": {"a": [{"b": {"c": {"d": 1}}}]}},
     "Properties nested deeper than 3 levels"),
    ("array-256", "track", {"userId": "u", "event": "E", "properties": {"a": list(range(256))}},
     "Array exceeds 255 elements"),
    ("nested-array-256", "screen",
     {"userId": "u", "properties": {"a": {"b": list(range(300))}}},
     "Array exceeds 255 elements"),
    # messageId and timestamps
    ("messageId-long", "track", {"userId": "u", "event": "E", "messageId": "m" * 101},
     "messageId exceeds 100 characters"),
    ("messageId-not-string", "track", {"userId": "u", "event": "E", "messageId": 5},
     "messageId must be a string"),
    ("timestamp-no-zone", "track", {"userId": "u", "event": "E",
                                    "timestamp": "2024-05-01T12:00:00"},
     "Invalid timestamp: timestamp"),
    ("timestamp-garbage", "identify", {"userId": "u", "timestamp": "yesterday"},
     "Invalid timestamp: timestamp"),
    ("timestamp-number", "page", {"userId": "u", "timestamp": 1714564800},
     "Invalid timestamp: timestamp"),
    ("timestamp-before-year-1-in-utc", "track",
     {"userId": "u", "event": "E", "timestamp": "0001-01-01T00:00:00+01:00"},
     "Invalid timestamp: timestamp"),
    ("sentAt-bad", "screen", {"userId": "u", "sentAt": "2024-13-01T00:00:00Z"},
     "Invalid timestamp: sentAt"),
    ("originalTimestamp-bad", "group", {"userId": "u", "groupId": "g",
                                        "originalTimestamp": "2024-05-01"},
     "Invalid timestamp: originalTimestamp"),
]

# Valid edge cases: exactly at each limit, numeric ids, unknown fields.
ACCEPTED: list[tuple[str, str, dict[str, Any]]] = [
    ("anonymous-only", "track", {"anonymousId": "a", "event": "E"}),
    ("numeric-userId", "identify", {"userId": 42}),
    ("numeric-anonymousId", "page", {"anonymousId": 7, "name": "Home"}),
    ("userId-255", "identify", {"userId": "u" * 255}),
    ("event-200", "track", {"userId": "u", "event": "e" * 200}),
    ("dollar-inside-event", "track", {"userId": "u", "event": "Paid $5"}),
    ("properties-255", "track", {"userId": "u", "event": "E", "properties": props(255)}),
    ("property-name-255", "track", {"userId": "u", "event": "E", "properties": {"k" * 255: 1}}),
    ("nested-3-levels", "track",
     {"userId": "u", "event": "E", "properties": {"a": {"b": {"c": 1}}}}),
    ("products-with-variants", "track",
     {"userId": "u", "event": "E",
      "properties": {"products": [{"sku": "1", "variant": {"color": "red"}}]}}),
    ("array-255", "track", {"userId": "u", "event": "E", "properties": {"a": list(range(255))}}),
    ("messageId-100", "track", {"userId": "u", "event": "E", "messageId": "m" * 100}),
    ("timestamps-with-zones", "track",
     {"userId": "u", "event": "E", "timestamp": "2024-05-01T12:00:00+02:00",
      "sentAt": "2024-05-01T10:00:01.123456+00:00", "originalTimestamp": TS}),
    ("group", "group", {"userId": "u", "groupId": 99, "traits": {"name": "Initech"}}),
    ("alias", "alias", {"userId": "u", "previousId": "anon-1"}),
    ("unknown-fields", "screen", {"userId": "u", "name": "Settings", "channel": "server",
                                  "_metadata": {"bundled": ["Segment.io"]}, "custom": [1, 2]}),
]
