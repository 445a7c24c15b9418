"""`trackd plan lint`, `plan test` and `plan infer` on good and broken inputs, as CI runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import ROOT
from tests.plans.plans import shop_plan
from trackd.cli import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def jsonl(tmp_path: Path, name: str, messages: list[dict[str, Any]]) -> str:
    return write(tmp_path, name, "".join(json.dumps(m) + "\n" for m in messages))


def test_lint_accepts_a_good_plan(tmp_path: Path) -> None:
    plan = write(tmp_path, "shop.yaml", shop_plan())
    assert run("plan", "lint", plan) == (0, f"{plan}: ok (plan shop, version 3, 2 events)\n",
                                         "")


BROKEN = {
    "invalid YAML": (
        "name: web\nversion: 1\nevents:\n  A:\n    properties: {type: object\n",
        "6: not valid YAML: expected ',' or '}', but got '<stream end>'"),
    "invalid schema": (
        "version: 1\nevents:\n  A:\n    properties:\n      type: object\n      properties:\n"
        "        price: {type: money}\n",
        "7: events.A.properties.properties.price.type: \"money\" is not valid under any of the "
        "schemas listed in the 'anyOf' keyword"),
    "unknown control value": (
        "version: 1\ncontrols:\n  unplanned_events: omit\n",
        "3: controls.unplanned_events: unknown value 'omit': use one of allow, flag, block"),
    "regex that does not compile": (
        "version: 1\nevents:\n  A:\n    properties:\n      properties:\n        sku:\n"
        "          type: string\n          pattern: '^(ab'\n",
        "8: events.A.properties.properties.sku.pattern: \"^(ab\" is not a \"regex\""),
    "unknown key": (
        "version: 1\nevents:\n  A:\n    propertees: {type: object}\n",
        "4: events.A.propertees: unknown key (expected one of description, properties)"),
    "misspelt keyword": (
        "version: 1\nidentify:\n  traits:\n    type: object\n    requried: [email]\n",
        "5: identify.traits.requried: unknown JSON Schema keyword 'requried' (annotations "
        "start with x-)"),
    "no version": ("name: web\nevents: {}\n", "1: (plan): version: missing"),
    "alias that contains itself": ("version: 1\ncommon: &c\n  allOf: [*c]\n",
                                   "1: nested too deep (or an alias that contains itself)"),
    "remote $ref": (
        "version: 1\ncommon:\n  $ref: https://example.com/schema.json\n",
        "3: common: $ref must point inside the plan"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_lint_points_at_the_line_and_field_of_a_broken_plan(tmp_path: Path, case: str) -> None:
    text, expected = BROKEN[case]
    plan = write(tmp_path, "web.yaml", text)
    code, out, err = run("plan", "lint", plan)
    assert code == 1
    assert out == ""
    assert err.startswith(f"{plan}:{expected}"), err
    assert err.count("\n") == 1


MANY_ERRORS = """\
version: -1
colour: blue
controls:
  unplanned_events: omit
  violations: ignore
events:
  Order Completed:
    properties:
      type: object
      requried: [order_id]
      properties:
        price: {type: money}
        sku: {type: string, pattern: '^(ab'}
  Cart Viewed:
    propertees: {type: object}
  Cart Viewed:
    description: twice
identify:
  traits:
    type: object
    properties:
      age: {type: integer, minimum: young}
"""


def test_lint_reports_every_error_of_a_file_with_its_line_and_field(tmp_path: Path) -> None:
    plan = write(tmp_path, "web.yaml", MANY_ERRORS)
    code, out, err = run("plan", "lint", plan)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"{plan}:1: version: must be a whole number, got -1",
        f"{plan}:2: colour: unknown key (expected one of common, controls, description, "
        "events, group, identify, name, pages, screens, version)",
        f"{plan}:4: controls.unplanned_events: unknown value 'omit': use one of allow, flag, "
        "block",
        f"{plan}:5: controls.violations: unknown value 'ignore': use one of flag, omit, block",
        f"{plan}:10: events.Order Completed.properties.requried: unknown JSON Schema keyword "
        "'requried' (annotations start with x-)",
        f"{plan}:12: events.Order Completed.properties.properties.price.type: \"money\" is not "
        "valid under any of the schemas listed in the 'anyOf' keyword",
        f"{plan}:15: events.Cart Viewed.propertees: unknown key (expected one of description, "
        "properties)",
        f"{plan}:16: events.Cart Viewed: this key is given twice",
        f"{plan}:22: identify.traits.properties.age.minimum: \"young\" is not of type "
        "\"number\"",
        f"{plan}: 9 errors"]


def test_lint_reports_a_pattern_that_does_not_compile_once_the_rest_is_right(
        tmp_path: Path) -> None:
    """Whether a schema compiles is asked only of schemas the meta-schema accepts."""
    plan = write(tmp_path, "web.yaml", MANY_ERRORS.replace("{type: money}", "{type: number}")
                 .replace("requried", "required").replace(
                     "  Cart Viewed:\n    description: twice\n", ""))
    _code, _out, err = run("plan", "lint", plan)
    assert (f"{plan}:13: events.Order Completed.properties.properties.sku.pattern: "
            "\"^(ab\" is not a \"regex\"") in err.splitlines()
    assert err.splitlines()[-1] == f"{plan}: 7 errors"


def test_lint_reports_every_file_and_fails_if_one_is_broken(tmp_path: Path) -> None:
    good = write(tmp_path, "good.yaml", shop_plan())
    bad = write(tmp_path, "bad.yaml", "version: one\n")
    code, out, err = run("plan", "lint", good, bad)
    assert (code, out) == (1, f"{good}: ok (plan shop, version 3, 2 events)\n")
    assert err == f"{bad}:1: version: must be a whole number, got 'one'\n"


def test_test_passes_messages_that_keep_the_plan(tmp_path: Path) -> None:
    plan = write(tmp_path, "shop.yaml", shop_plan())
    messages = jsonl(tmp_path, "ok.jsonl", [
        {"type": "track", "userId": "u", "event": "Order Completed",
         "properties": {"order_id": "o", "revenue": 1}},
        {"type": "identify", "userId": "u", "traits": {"email": "a@example.com"}}])
    assert run("plan", "test", plan, messages) == (
        0, "2 messages checked against plan shop version 3: all keep it\n", "")


def test_test_lists_each_violation_with_its_place_and_path(tmp_path: Path) -> None:
    plan = write(tmp_path, "shop.yaml", shop_plan(properties="omit", violations="block"))
    messages = jsonl(tmp_path, "bad.jsonl", [
        {"type": "track", "userId": "u", "event": "Order Completed",
         "properties": {"order_id": "o", "revenue": 1}},
        {"type": "track", "userId": "u", "event": "Order Completed",
         "properties": {"revenue": "1", "coupon": "X"}},
        {"type": "track", "userId": "u", "event": "Cart Viewed"},
        {"type": "track", "userId": "u"}])
    code, out, _err = run("plan", "test", plan, messages)
    assert code == 1
    assert out.splitlines() == [
        f'{messages}:2: (track Order Completed) required_missing at properties.order_id: '
        '"order_id" is a required property [required; block]',
        f'{messages}:2: (track Order Completed) type_mismatch at properties.revenue: "1" is '
        'not of type "number" [type: "number"; block]',
        f"{messages}:2: (track Order Completed) unplanned_property at properties.coupon: "
        "'coupon' is not in the plan [properties; omit]",
        f"{messages}:3: (track Cart Viewed) unplanned_event at event: 'Cart Viewed' is not in "
        "the plan [events; flag]",
        f"{messages}:4: not a valid message: Missing required field: event",
        "4 messages checked against plan shop version 3: 3 break it (5 violations)"]


def test_test_reads_a_segment_batch_body(tmp_path: Path) -> None:
    plan = write(tmp_path, "shop.yaml", shop_plan())
    body = write(tmp_path, "body.json", json.dumps({"batch": [
        {"type": "track", "userId": "u", "event": "Signed Up"},
        {"type": "track", "userId": "u", "event": "Order Completed"}]}))
    code, out, _err = run("plan", "test", plan, body)
    assert code == 1
    assert out.splitlines()[0].startswith(
        f"{body}: batch[1]: (track Order Completed) required_missing at properties.order_id")


def test_test_points_at_a_line_that_is_not_json(tmp_path: Path) -> None:
    plan = write(tmp_path, "shop.yaml", shop_plan())
    messages = write(tmp_path, "m.jsonl", '{"type": "track", "userId": "u", "event": "A"}\n'
                     '{"type": \n')
    code, _out, err = run("plan", "test", plan, messages)
    assert code == 1
    assert err.startswith(f"Error: {messages}:2: not valid JSON")


def test_test_refuses_a_broken_plan_with_one_line(tmp_path: Path) -> None:
    plan = write(tmp_path, "shop.yaml", "version: 1\ncontrols: {violations: drop}\n")
    messages = jsonl(tmp_path, "m.jsonl", [{"type": "track", "userId": "u", "event": "A"}])
    code, _out, err = run("plan", "test", plan, messages)
    assert (code, err) == (1, f"Error: {plan}:2: controls.violations: unknown value 'drop': "
                              "use one of flag, omit, block\n")


SEEN = [
    {"type": "track", "userId": "u1", "event": "Order Completed",
     "properties": {"order_id": f"o{i}", "revenue": 10 + i * 0.5, "currency": "EUR",
                    "products": [{"sku": "a", "qty": 1}, {"sku": "b"}],
                    **({"coupon": None} if i % 2 else {})}}
    for i in range(6)
] + [
    {"type": "track", "anonymousId": "a1", "event": "Signed Up", "properties": {}},
    {"type": "identify", "userId": "u1", "traits": {"email": "a@example.com", "age": 31}},
    {"type": "identify", "userId": "u2", "traits": {"email": "b@example.com"}},
    {"type": "page", "userId": "u1", "name": "Home", "properties": {"url": "https://x/"}},
    {"type": "group", "userId": "u1", "groupId": "g", "traits": {"name": "Acme"}},
]


def test_infer_writes_a_plan_that_lints_and_that_its_messages_keep(tmp_path: Path) -> None:
    messages = jsonl(tmp_path, "seen.jsonl", SEEN)
    plan = str(tmp_path / "inferred.yaml")
    code, _out, err = run("plan", "infer", "--messages", messages, "-o", plan)
    lines = len(Path(plan).read_text().splitlines())
    assert (code, err) == (0, f"wrote {plan} (11 messages of {messages}; {lines} lines)\n")
    assert run("plan", "lint", plan)[0] == 0
    assert run("plan", "test", plan, messages) == (
        0, "11 messages checked against plan seen version 1: all keep it\n", "")
    text = Path(plan).read_text()
    assert "enum:\n          - EUR" in text  # a repeated string with one value
    # what the plan says about what it saw: a new event or a changed type breaks it
    changed = jsonl(tmp_path, "changed.jsonl", [
        {"type": "track", "userId": "u", "event": "Order Completed",
         "properties": {"order_id": 7, "revenue": 1, "currency": "EUR", "products": []}},
        {"type": "track", "userId": "u", "event": "Refund Issued"}])
    code, out, _err = run("plan", "test", plan, changed)
    assert code == 1
    assert "type_mismatch at properties.order_id" in out
    assert "unplanned_event at event" in out


def test_infer_needs_a_source_or_a_file() -> None:
    code, _out, err = run("plan", "infer")
    assert code == 2
    assert "give --source (the warehouse) or --messages FILE" in err


def test_the_installed_command_runs_the_same(tmp_path: Path) -> None:
    plan = write(tmp_path, "web.yaml", "version: 1\ncontrols:\n  violations: drop\n")
    result = subprocess.run([sys.executable, "-m", "trackd", "plan", "lint", plan], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr == (f"{plan}:3: controls.violations: unknown value 'drop': use one "
                             "of flag, omit, block\n")
