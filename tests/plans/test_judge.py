"""`Plan.judge` on the parts of a plan the SDK tests do not reach: pages and screens, common,
`allow`, schemas that plan any key, and what omit can and cannot remove."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from trackd.plans.plan import Plan, load

PLAN = """\
version: 2
controls: {{unplanned_events: {events}, unplanned_properties: {properties}, violations: omit}}
events:
  Searched:
    properties:
      type: object
      properties:
        query: {{type: string, maxLength: 5}}
        filters: {{type: object}}
        tags: {{type: object, additionalProperties: {{type: string}}}}
pages:
  "*": {{properties: {{type: object, required: [url]}}}}
screens:
  Home: {{}}
common:
  type: object
  required: [context]
  properties:
    context: {{type: object, properties: {{app: {{type: object, properties: {{v: {{}}}}}}}}}}
"""


def plan(tmp_path: Path, events: str = "flag", properties: str = "flag") -> Plan:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN.format(events=events, properties=properties))
    return load(path)


def found(plan: Plan, message: dict[str, Any]) -> set[tuple[str, str, str]]:
    judged = plan.judge({"context": {}, **message})
    return set() if judged is None else {(v.kind, v.path, v.action) for v in judged.violations}


def test_pages_by_star_screens_by_name(tmp_path: Path) -> None:
    p = plan(tmp_path)
    assert found(p, {"type": "page", "name": "Any", "properties": {"url": "/"}}) == set()
    assert found(p, {"type": "page", "properties": {}}) == {
        ("required_missing", "properties.url", "flag")}
    assert found(p, {"type": "screen", "name": "Home", "properties": {"x": 1}}) == set()
    assert found(p, {"type": "screen", "name": "Cart"}) == {("unplanned_event", "name", "flag")}
    # identify and group are not in this plan: not judged (common aside)
    assert found(p, {"type": "identify", "traits": {"anything": 1}}) == set()


def test_common_sees_the_message_as_sent_and_checks_what_it_describes(tmp_path: Path) -> None:
    p = plan(tmp_path)
    judged = p.judge({"type": "alias", "previousId": "a"})
    assert judged is not None
    assert [(v.kind, v.path, v.action) for v in judged.violations] == [
        ("required_missing", "context", "flag")]  # nothing to omit: flagged
    # a message's own fields are never unplanned; the objects common describes are
    assert found(p, {"type": "alias", "previousId": "a", "context": {"app": {"v": 1, "w": 2},
                                                                     "ip": "x"}}) == {
        ("unplanned_property", "context.app.w", "flag"),
        ("unplanned_property", "context.ip", "flag")}


def test_keys_planned_by_a_schema_that_describes_none(tmp_path: Path) -> None:
    p = plan(tmp_path)
    message = {"type": "track", "event": "Searched",
               "properties": {"filters": {"a": 1}, "tags": {"x": "y"}}}
    assert found(p, message) == set()
    assert found(p, {**message, "properties": {"tags": {"x": 1}}}) == {
        ("type_mismatch", "properties.tags.x", "omit")}


def test_omit_removes_the_field_and_keeps_the_rest(tmp_path: Path) -> None:
    p = plan(tmp_path, properties="omit")
    message = {"type": "track", "event": "Searched", "context": {},
               "properties": {"query": "too long", "extra": 1, "filters": {}}}
    judged = p.judge(message)
    assert judged is not None and judged.blocked is None
    assert message["properties"] == {"filters": {}}


def test_allow_reports_nothing_of_its_kind(tmp_path: Path) -> None:
    p = plan(tmp_path, events="allow", properties="allow")
    assert found(p, {"type": "track", "event": "Unknown"}) == set()
    assert found(p, {"type": "track", "event": "Searched", "properties": {"x": 1}}) == set()


def test_block_keeps_the_message_whole(tmp_path: Path) -> None:
    p = plan(tmp_path, events="block", properties="omit")
    message = {"type": "track", "event": "Nope", "context": {}, "properties": {"x": 1}}
    judged = p.judge(message)
    assert judged is not None and judged.reason == "tracking plan: unplanned_event at event"
    assert message["properties"] == {"x": 1}


@pytest.mark.parametrize("event", ["", None])
def test_a_page_without_a_name_is_judged_by_star(tmp_path: Path, event: str | None) -> None:
    assert found(plan(tmp_path), {"type": "page", "name": event, "properties": {"url": "/"}}
                 ) == set()
