"""trackd's schema compilation agrees with the official JSON-Schema-Test-Suite (draft 2020-12)
on every keyword tracking plans use, and asserts the formats it checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from trackd.plans.document import Document
from trackd.plans.schema import compile_schema

SUITE = Path(__file__).parent / "json_schema_test_suite"
# format.json checks that `format` is only an annotation by default; trackd asserts the
# formats (a bad email is `value_invalid`), which optional/format/*.json checks instead.
FILES = sorted(p for p in SUITE.rglob("*.json") if p.name != "format.json")


def disagreements(path: Path) -> list[str]:
    out = []
    for group in json.loads(path.read_text()):
        doc = Document(path.name, {})
        rule = compile_schema(doc, (), group["schema"])
        for case in group["tests"]:
            found: list[Any] = rule.check(case["data"], (), unplanned=False)
            if (not found) != case["valid"]:
                out.append(f"{group['description']}: {case['description']}")
    return out


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SUITE)))
def test_the_suite_passes(path: Path) -> None:
    assert disagreements(path) == []


def test_the_suite_is_there() -> None:
    assert len(FILES) == 31
    assert sum(len(group["tests"]) for path in FILES
               for group in json.loads(path.read_text())) > 900
