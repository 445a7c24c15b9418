"""Cost of checking one message against a tracking plan of 50 events, in process.

Run from the repository root (it imports bench/bodies.py for the bench scenarios' bodies).

    .venv/bin/python bench/plan_validation.py [--seconds 1]

Times, per message, (1) each JSON Schema library alone validating the properties of a typical
e-commerce event against its compiled schema (jsonschema-rs, jsonschema, fastjsonschema, each
when installed; fastjsonschema gets the same schema as draft-07, the newest it knows), and
(2) trackd's whole `Plan.judge` (schema check + unplanned-property walk + common schema) on a
valid and on an invalid message, next to what the gateway already spends on a message without
a plan (`problem` + `enrich` + encoding), so the added cost reads as a ratio.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import msgspec
import yaml

from trackd.messages.enrich import Envelope, MessageIds, enrich
from trackd.messages.validate import problem
from trackd.plans.plan import load

EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["order_id", "revenue", "currency"],
    "properties": {
        "order_id": {"type": "string", "pattern": "^ord_[0-9a-f]+$"},
        "revenue": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "enum": ["USD", "EUR", "GBP"]},
        "coupon": {"type": "string", "maxLength": 40},
        "products": {"type": "array", "maxItems": 100, "items": {
            "type": "object", "required": ["sku"],
            "properties": {"sku": {"type": "string"}, "price": {"type": "number"},
                           "quantity": {"type": "integer", "minimum": 1}}}},
    },
}
MESSAGE: dict[str, Any] = {
    "type": "track", "event": "Event 25", "userId": "user-123", "messageId": "m-1",
    "timestamp": "2026-12-04T12:00:00.000Z",
    "context": {"library": {"name": "analytics-python", "version": "2.4.0"},
                "ip": "10.0.0.1", "page": {"url": "https://shop.example/checkout"}},
    "properties": {"order_id": "ord_5f2a", "revenue": 42.5, "currency": "EUR",
                   "coupon": "WINTER", "products": [
                       {"sku": "sku-1", "price": 20.0, "quantity": 1},
                       {"sku": "sku-2", "price": 22.5, "quantity": 2}]},
}


def plan_text(events: int = 50) -> str:
    plan = {"name": "bench", "version": 1,
            "controls": {"unplanned_events": "flag", "unplanned_properties": "flag",
                         "violations": "flag"},
            "events": {f"Event {i}": {"properties": EVENT_SCHEMA} for i in range(events)},
            "identify": {"traits": {"type": "object",
                                    "properties": {"email": {"type": "string"}}}},
            "common": {"type": "object", "required": ["userId"],
                       "properties": {"context": {"type": "object"}}}}
    return yaml.safe_dump(plan, sort_keys=False)


def per_call(fn: Callable[[], object], seconds: float) -> float:
    """Microseconds per call of `fn`, best of 3 timed runs of about `seconds` / 3 each."""
    runs = []
    for _ in range(3):
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / 3:
            for _ in range(200):
                fn()
            count += 200
        runs.append((time.perf_counter() - started) / count * 1e6)
    return min(runs)


Compile = Callable[[Any], Callable[[Any], bool]]


def libraries() -> dict[str, Compile]:
    """Each installed candidate: its name and version -> schema -> `is_valid`."""
    out: dict[str, Compile] = {}
    try:
        rs = importlib.import_module("jsonschema_rs")
        out["jsonschema-rs " + version("jsonschema-rs")] = lambda schema: rs.validator_for(
            schema, validate_formats=True).is_valid
    except ImportError:
        pass
    try:
        js = importlib.import_module("jsonschema")
        out["jsonschema " + version("jsonschema")] = lambda schema: js.Draft202012Validator(
            schema, format_checker=js.Draft202012Validator.FORMAT_CHECKER).is_valid
    except ImportError:
        pass
    try:
        fjs = importlib.import_module("fastjsonschema")

        def fast(schema: Any) -> Callable[[Any], bool]:
            draft7 = ({"$schema": "http://json-schema.org/draft-07/schema#", **schema}
                      if isinstance(schema, dict) else schema)
            compiled = fjs.compile(draft7)

            def is_valid(value: Any) -> bool:
                try:
                    compiled(value)
                except fjs.JsonSchemaException:
                    return False
                return True

            return is_valid

        out["fastjsonschema " + fjs.VERSION + " (draft-07)"] = fast
    except ImportError:
        pass
    return out


def conformance(suite: Path) -> None:
    """Cases of the JSON-Schema-Test-Suite files under `suite` each library gets right
    (format.json left out: trackd asserts formats, optional/format/*.json checks that)."""
    files = sorted(p for p in suite.rglob("*.json") if p.name != "format.json")
    print("| library | cases right | wrong | schemas refused |\n| --- | ---: | ---: | ---: |")
    for name, compile_schema in libraries().items():
        right = wrong = refused = 0
        for path in files:
            for group in json.loads(path.read_text()):
                try:
                    is_valid = compile_schema(group["schema"])
                except Exception:  # the library cannot compile this schema
                    refused += len(group["tests"])
                    continue
                for case in group["tests"]:
                    try:
                        ok = is_valid(case["data"]) == case["valid"]
                    except Exception:
                        ok = False
                    right, wrong = right + ok, wrong + (not ok)
        print(f"| {name} | {right} | {wrong} | {refused} |")


class _NoLog:
    """Stands in for the log writer: only the request path's CPU is measured here."""

    async def append(self, *args: object) -> None:
        return None


def ingest_cost(rounds: int = 9) -> None:
    """CPU per message of the gateway's request handling (parse, validate, judge, enrich,
    encode; no HTTP, no disk) on the bench scenarios' bodies, without and with the 50-event
    plan of the trackd-2w-plan target, alternated, best of `rounds` (process time)."""
    import asyncio

    import bodies

    from trackd.gateway.ingest import Ingestor
    from trackd.observability import Registry
    from trackd.settings import SourceSettings

    with tempfile.TemporaryDirectory() as tmp:
        templates = bodies.write_templates(Path(tmp), "k")
        lines = {name: [line.split("\t", 1)[1].replace(bodies.MID, "m").encode()
                        for line in Path(spec["file"]).read_text().splitlines()]
                 for name, spec in templates.items() if name in ("single", "batch")}
        (Path(tmp) / "plan.yaml").write_text(bodies.tracking_plan())
        plan = load(Path(tmp) / "plan.yaml")
    sources = (SourceSettings(name="bench", write_keys=["k"]),)
    without = Ingestor(sources, _NoLog(), Registry())  # type: ignore[arg-type]
    with_plan = Ingestor(sources, _NoLog(), Registry(),  # type: ignore[arg-type]
                         plans={"bench": plan})

    async def per_message(ingestor: Ingestor, scenario: str) -> float:
        started = time.process_time()
        for body in lines[scenario]:
            if scenario == "batch":
                await ingestor.batch(body, "k", "10.0.0.1")
            else:
                await ingestor.single("track", body, "k", "10.0.0.1")
        count = len(lines[scenario]) * (bodies.BATCH_SIZE if scenario == "batch" else 1)
        return (time.process_time() - started) / count * 1e6

    print("| gateway request path (no HTTP, no disk) | µs per message without a plan "
          "| with the 50-event plan |\n| --- | ---: | ---: |")
    for scenario in ("batch", "single"):
        plain, planned = [], []
        for _ in range(rounds):
            plain.append(asyncio.run(per_message(without, scenario)))
            planned.append(asyncio.run(per_message(with_plan, scenario)))
        print(f"| {scenario} | {min(plain):.2f} | {min(planned):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    parser.add_argument("--suite", type=Path,
                        help="also run the JSON-Schema-Test-Suite files under this folder")
    args = parser.parse_args()
    if args.suite:
        conformance(args.suite)
    ingest_cost()
    props = MESSAGE["properties"]
    print("| what | µs per message |\n| --- | ---: |")
    for name, compile_schema in libraries().items():
        is_valid = compile_schema(EVENT_SCHEMA)
        assert is_valid(props)
        cost = per_call(lambda: is_valid(props), args.seconds)  # noqa: B023 - used at once
        print(f"| {name}: properties of a valid event | {cost:.2f} |")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.yaml"
        path.write_text(plan_text())
        plan = load(path)
    bad = copy.deepcopy(MESSAGE)
    bad["properties"]["revenue"] = "42.5"
    bad["properties"]["shipping"] = 4.0
    assert plan.judge(copy.deepcopy(MESSAGE)) is None
    assert plan.judge(copy.deepcopy(bad)) is not None
    ids, encode = MessageIds(), msgspec.json.Encoder().encode
    received = datetime.now(UTC)

    def no_plan() -> None:
        message = dict(MESSAGE)
        problem(message, None)
        enrich(message, Envelope(received, "127.0.0.1"), ids)
        encode(message)

    base = per_call(no_plan, args.seconds)
    print(f"| gateway work on a message without a plan (validate, enrich, encode) | {base:.2f} |")
    good = per_call(lambda: plan.judge(MESSAGE), args.seconds)
    print(f"| trackd `Plan.judge`, 50-event plan, valid message | {good:.2f} "
          f"({good / base:.2f}x the work without a plan) |")
    worse = per_call(lambda: plan.judge(copy.deepcopy(bad)), args.seconds)
    deep = per_call(lambda: copy.deepcopy(bad), args.seconds)
    print(f"| trackd `Plan.judge`, 50-event plan, 2 violations | {worse - deep:.2f} |")


if __name__ == "__main__":
    main()
