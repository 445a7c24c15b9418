"""Request bodies for the load scenarios, written as templates for bench/lua/post.lua.

Each template line is `<path>\\t<json body>`; every `@MID@` becomes a messageId unique to the
request (wrk builds the body per request), so no two requests of a run repeat an id.

- single: one browser-shaped (analytics.js) track per request, POST /v1/track;
- batch:  analytics-python-shaped uploads of 100 events (90 track, 10 identify) to /v1/batch:
          `{"batch": [...], "sentAt": ..., "writeKey": ...}`, each item with messageId,
          timestamp, context.library, integrations {} and `null` for the missing id;
- mixed:  one browser-shaped message per request over all six types, each on its own path
          (/v1/track, /v1/page, /v1/identify, /v1/screen, /v1/group, /v1/alias).
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

MID = "@MID@"
BATCH_SIZE = 100
EVENTS = ["Product Viewed", "Product Added", "Order Completed", "Checkout Started",
          "Products Searched", "Cart Viewed", "Signed In", "Coupon Applied",
          "Product Removed", "Payment Info Entered"]
PAGES = ["/", "/pricing", "/docs/getting-started", "/blog/launch", "/product/monopoly-3rd"]
MIXED_TYPES = (["track"] * 8 + ["page"] * 5 + ["identify"] * 3 + ["screen"] * 2 + ["group"]
               + ["alias"])
UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
      "Chrome/131.0.0.0 Safari/537.36")


def _py_iso(moment: datetime) -> str:
    """analytics-python's format: ISO with milliseconds and +00:00."""
    return moment.isoformat(timespec="milliseconds")


def _js_iso(moment: datetime) -> str:
    """analytics.js's format: ISO with milliseconds and Z."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _properties(rng: random.Random) -> dict[str, Any]:
    price = round(rng.uniform(3, 250), 2)
    return {"product_id": f"prod-{rng.randrange(5000)}", "sku": f"SKU-{rng.randrange(99999):05d}",
            "category": rng.choice(["Games", "Books", "Garden", "Kitchen"]),
            "name": "Monopoly: 3rd Edition", "brand": "Hasbro", "price": price,
            "quantity": rng.randrange(1, 4), "currency": "USD", "position": rng.randrange(1, 30),
            "value": price, "url": "https://www.example.com/product/path",
            "image_url": "https://www.example.com/product/path.jpg"}


def python_item(rng: random.Random, now: datetime, kind: str) -> dict[str, Any]:
    """One batch item as segment-analytics-python 2.4.0 builds it."""
    user = f"user-{rng.randrange(200_000)}"
    item: dict[str, Any] = {"integrations": {}, "anonymousId": None, "userId": user,
                            "context": {"library": {"name": "analytics-python",
                                                    "version": "2.4.0"}},
                            "timestamp": _py_iso(now - timedelta(seconds=rng.uniform(0, 5)))}
    if kind == "track":
        item["properties"] = _properties(rng)
        item["event"] = rng.choice(EVENTS)
    else:
        item["traits"] = {"email": f"{user}@example.com", "plan": rng.choice(["free", "pro"]),
                          "logins": rng.randrange(1, 500)}
    item["messageId"] = MID
    item["type"] = kind
    return item


def browser_message(rng: random.Random, now: datetime, kind: str) -> dict[str, Any]:
    """One message as analytics.js sends it to a single-message path."""
    page = rng.choice(PAGES)
    anonymous = f"{rng.getrandbits(128):032x}"
    message: dict[str, Any] = {
        "timestamp": _js_iso(now - timedelta(milliseconds=rng.uniform(5, 400))),
        "integrations": {}, "type": kind, "anonymousId": anonymous,
        "context": {"page": {"path": page, "referrer": "https://www.google.com/", "search": "",
                             "title": "Example store", "url": f"https://www.example.com{page}"},
                    "userAgent": UA, "locale": "en-US",
                    "library": {"name": "analytics.js", "version": "npm:next-1.84.3"}},
        "messageId": MID, "sentAt": _js_iso(now),
        "_metadata": {"bundled": ["Segment.io"], "unbundled": [], "bundledIds": []},
    }
    if rng.random() < 0.6 or kind == "alias":
        message["userId"] = f"user-{rng.randrange(200_000)}"
    if kind == "track":
        message["event"] = rng.choice(EVENTS)
        message["properties"] = _properties(rng)
    elif kind in ("page", "screen"):
        message["name"] = "Product"
        message["properties"] = {"path": page, "url": f"https://www.example.com{page}"}
    elif kind == "identify":
        message["traits"] = {"email": "jane@example.com", "plan": "pro", "logins": 12}
    elif kind == "group":
        message["groupId"] = f"org-{rng.randrange(1000)}"
        message["traits"] = {"name": "Initech", "employees": 120}
    elif kind == "alias":
        message["previousId"] = anonymous
    return message


def _line(path: str, body: dict[str, Any]) -> str:
    return path + "\t" + json.dumps(body, separators=(",", ":")) + "\n"


def write_templates(directory: Path, write_key: str, seed: int = 6) -> dict[str, dict[str, Any]]:
    """Write one template file per scenario; returns {scenario: {file, events_per_request,
    mean_bytes}}."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    directory.mkdir(parents=True, exist_ok=True)
    scenarios: dict[str, list[str]] = {"single": [], "batch": [], "mixed": []}
    for _ in range(200):
        scenarios["single"].append(_line("/v1/track", browser_message(rng, now, "track")))
    for _ in range(16):
        items = [python_item(rng, now, "identify" if i % 10 == 9 else "track")
                 for i in range(BATCH_SIZE)]
        body = {"batch": items, "sentAt": _py_iso(now), "writeKey": write_key}
        scenarios["batch"].append(_line("/v1/batch", body))
    for _ in range(10):
        for kind in MIXED_TYPES:
            scenarios["mixed"].append(_line(f"/v1/{kind}", browser_message(rng, now, kind)))
    out: dict[str, dict[str, Any]] = {}
    for name, lines in scenarios.items():
        path = directory / f"{name}.tsv"
        path.write_text("".join(lines))
        sizes = [len(line.split("\t", 1)[1]) - 1 for line in lines]
        out[name] = {"file": str(path),
                     "events_per_request": BATCH_SIZE if name == "batch" else 1,
                     "mean_bytes": sum(sizes) / len(sizes)}
    return out


def tracking_plan(events: int = 50) -> str:
    """A tracking plan of `events` events (the EVENTS above among them, with the schema of
    their properties) that every message of the scenarios keeps: the `trackd-2w-plan` target
    measures what checking costs, not what refusing saves."""
    product = {
        "type": "object", "required": ["product_id", "price"],
        "properties": {
            "product_id": {"type": "string", "pattern": "^prod-[0-9]+$"},
            "sku": {"type": "string", "maxLength": 16},
            "category": {"type": "string", "enum": ["Games", "Books", "Garden", "Kitchen"]},
            "name": {"type": "string"}, "brand": {"type": "string"},
            "price": {"type": "number", "minimum": 0},
            "quantity": {"type": "integer", "minimum": 1},
            "currency": {"type": "string", "enum": ["USD", "EUR", "GBP"]},
            "position": {"type": "integer"}, "value": {"type": "number"},
            "url": {"type": "string"}, "image_url": {"type": "string"}}}
    names = EVENTS + [f"Planned Event {i}" for i in range(events - len(EVENTS))]
    plan = {
        "name": "bench", "version": 1,
        "controls": {"unplanned_events": "flag", "unplanned_properties": "flag",
                     "violations": "flag"},
        "events": {name: {"properties": product} for name in names},
        "identify": {"traits": {"type": "object", "properties": {
            "email": {"type": "string"}, "plan": {"type": "string", "enum": ["free", "pro"]},
            "logins": {"type": "integer", "minimum": 0}}}},
        "pages": {"*": {"properties": {"type": "object", "required": ["url"]}}},
        "common": {"type": "object", "required": ["context", "messageId"]},
    }
    return json.dumps(plan, indent=1)  # JSON is YAML
