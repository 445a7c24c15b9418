"""One JSON Schema of a plan: checked, compiled once, and run against a part of a message.

Checking (at start-up and by `trackd plan lint`): every keyword is one JSON Schema 2020-12
knows (or an `x-` annotation), the schema is valid against the 2020-12 meta-schema, and it
compiles (its regular expressions too). `$ref` may point inside the plan only: nothing is
fetched from the network.

Running: the compiled validator (jsonschema-rs, see docs/data-quality.md for how it was
chosen) answers `is_valid` first, so a message that passes costs one call into Rust; only a
failing one has its errors listed. Unplanned properties are found by a walk over the keys the
schema describes (its `properties`, at every depth it describes): a key not named there is
unplanned, unless `additionalProperties` (a schema, not false) or `patternProperties` plan it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from trackd.errors import PlanError
from trackd.plans.document import Document, Path_

UNPLANNED_EVENT = "unplanned_event"
UNPLANNED_PROPERTY = "unplanned_property"
REQUIRED_MISSING = "required_missing"
TYPE_MISMATCH = "type_mismatch"
VALUE_INVALID = "value_invalid"
DRAFT_2020 = "https://json-schema.org/draft/2020-12/schema"
KINDS = (UNPLANNED_EVENT, UNPLANNED_PROPERTY, REQUIRED_MISSING, TYPE_MISMATCH, VALUE_INVALID)

# Keywords whose value is a schema, a list of schemas, or a map of names to schemas.
_SUBSCHEMA = {"items", "contains", "additionalProperties", "propertyNames", "not", "if", "then",
              "else", "unevaluatedItems", "unevaluatedProperties", "contentSchema"}
_SCHEMA_LIST = {"allOf", "anyOf", "oneOf", "prefixItems"}
_SCHEMA_MAP = {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
_PLAIN = {"$schema", "$id", "$anchor", "$dynamicAnchor", "$ref", "$dynamicRef", "$comment",
          "$vocabulary", "type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum",
          "minimum", "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems",
          "minItems", "uniqueItems", "maxContains", "minContains", "maxProperties",
          "minProperties", "required", "dependentRequired", "format", "title", "description",
          "default", "deprecated", "readOnly", "writeOnly", "examples", "contentEncoding",
          "contentMediaType"}
KEYWORDS = _SUBSCHEMA | _SCHEMA_LIST | _SCHEMA_MAP | _PLAIN
_KIND_OF = {"required": REQUIRED_MISSING, "dependentRequired": REQUIRED_MISSING,
            "type": TYPE_MISMATCH, "additionalProperties": UNPLANNED_PROPERTY,
            "unevaluatedProperties": UNPLANNED_PROPERTY}


@dataclass(frozen=True, slots=True)
class Found:
    """One violation found in a message: kind, JSON path (as keys), rule and message."""

    kind: str
    path: Path_
    rule: str
    message: str


@dataclass(frozen=True, slots=True)
class Shape:
    """The keys a schema plans for an object: `keys` None means any key is planned."""

    keys: frozenset[str] | None
    patterns: tuple[re.Pattern[str], ...]
    children: dict[str, Shape]
    items: Shape | None


def schema_problems(doc: Document, at: Path_, schema: Any) -> list[PlanError]:
    """Every reason `schema` is not a usable JSON Schema 2020-12, each with its line: unknown
    keywords, then what the meta-schema refuses; whether it compiles only when neither."""
    if not isinstance(schema, dict | bool):
        return [doc.error(at, "a JSON Schema must be a mapping (or true / false)")]
    found = _keyword_problems(doc, at, schema)
    found += _meta_problems(doc, at, schema)
    if not found:
        try:
            compile_schema(doc, at, schema)
        except PlanError as exc:
            found.append(exc)
    return found


def _meta_problems(doc: Document, at: Path_, schema: Any) -> list[PlanError]:
    try:
        jsonschema_rs.meta.validate(schema)  # against its $schema's draft, else 2020-12
    except jsonschema_rs.ValidationError as exc:
        first = doc.error((*at, *exc.instance_path), _one_line(exc.message))
    else:
        return []
    declared = schema.get("$schema", DRAFT_2020) if isinstance(schema, dict) else DRAFT_2020
    if not isinstance(declared, str) or declared.rstrip("#") != DRAFT_2020:
        # another draft (or none that is known): its first error only
        return [first]
    return [doc.error((*at, *error.instance_path), _one_line(error.message))
            for error in _meta_2020().iter_errors(schema)] or [first]


@functools.cache
def _meta_2020() -> Any:
    """A validator of schemas against the 2020-12 meta-schema (bundled with the library)."""
    return jsonschema_rs.validator_for({"$ref": DRAFT_2020})


def compile_schema(doc: Document, at: Path_, schema: Any) -> Rule:
    try:
        validator = jsonschema_rs.validator_for(schema, validate_formats=True,
                                                retriever=_no_retrieval)
    except jsonschema_rs.ValidationError as exc:
        message = _one_line(exc.message)
        if "is not present in a registry" in message or "does not exist" in message:
            message = "$ref must point inside the plan (#/...): " + message
        raise doc.error((*at, *exc.instance_path), message) from None
    except (ValueError, jsonschema_rs.ReferencingError) as exc:
        raise doc.error(at, _one_line(str(exc))) from None
    return Rule(validator, schema, shape_of(schema))


def _no_retrieval(uri: str) -> Any:
    raise ValueError(f"remote schemas are not fetched ({uri})")


def _keyword_problems(doc: Document, at: Path_, schema: Any) -> list[PlanError]:
    if not isinstance(schema, dict):
        return []
    found = []
    for key, value in schema.items():
        here = (*at, key)
        if key.startswith("x-"):
            continue
        if key not in KEYWORDS:
            found.append(doc.error(here, f"unknown JSON Schema keyword {key!r} (annotations "
                                   "start with x-)"))
        elif key in _SUBSCHEMA:
            found += _keyword_problems(doc, here, value)
        elif key in _SCHEMA_LIST and isinstance(value, list):
            for index, item in enumerate(value):
                found += _keyword_problems(doc, (*here, index), item)
        elif key in _SCHEMA_MAP and isinstance(value, dict):
            for name, item in value.items():
                found += _keyword_problems(doc, (*here, name), item)
    return found


def shape_of(schema: Any) -> Shape | None:
    """The planned keys of an object schema, or None when the schema describes no keys."""
    if not isinstance(schema, dict):
        return None
    items = shape_of(schema.get("items"))
    props = schema.get("properties")
    extra = schema.get("additionalProperties", True)
    if not isinstance(props, dict) and extra is not False:
        return None if items is None else Shape(None, (), {}, items)
    props = props if isinstance(props, dict) else {}
    children = {name: child for name, sub in props.items()
                if (child := shape_of(sub)) is not None}
    patterns = tuple(_compiled(p) for p in schema.get("patternProperties", {}) or {})
    keys = frozenset(props) if extra is False or extra is True else None
    return Shape(keys, tuple(p for p in patterns if p is not None), children, items)


def _compiled(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None  # valid for JSON Schema's regex engine, not Python's: plans nothing


class Rule:
    """A compiled schema, run against one part of a message (its prefix in JSON paths)."""

    __slots__ = ("_is_valid", "_validator", "schema", "shape")

    def __init__(self, validator: Any, schema: Any, shape: Shape | None) -> None:
        self._validator = validator
        self._is_valid = validator.is_valid
        self.schema = schema
        self.shape = shape

    def check(self, value: Any, prefix: Path_, unplanned: bool) -> list[Found]:
        """The violations of `value`: schema errors, then unplanned keys when `unplanned`."""
        out: list[Found] = []
        if not self._is_valid(value):
            out.extend(self._errors(value, prefix))
        shape = self.shape
        if unplanned and shape is not None and not _planned(shape, value):
            seen = {f.path for f in out if f.kind == UNPLANNED_PROPERTY}
            out.extend(f for f in _unplanned(shape, value, prefix) if f.path not in seen)
        return out

    def as_common(self) -> Rule:
        """This rule as `common`, run on whole messages: a message's own fields are never
        unplanned (the objects in it the schema describes are checked). The whole message
        goes to the validator: handing it only the fields the schema names was measured
        slower (building that dict costs more than jsonschema-rs reading the message)."""
        if self.shape is not None:
            self.shape = Shape(None, (), self.shape.children, self.shape.items)
        return self

    def _errors(self, value: Any, prefix: Path_) -> Iterable[Found]:
        for error in self._validator.iter_errors(value):
            keyword = str(error.schema_path[-1]) if error.schema_path else "schema"
            kind = _KIND_OF.get(keyword, VALUE_INVALID)
            path = (*prefix, *error.instance_path)
            message = _one_line(error.message)
            if kind == REQUIRED_MISSING:
                yield Found(kind, (*path, str(error.kind.property)), keyword, message)
            elif kind == UNPLANNED_PROPERTY:
                for name in error.kind.unexpected:
                    yield Found(kind, (*path, str(name)), keyword,
                                f"{name!r} is not in the plan")
            else:
                yield Found(kind, path, _rule(self.schema, error.schema_path, keyword), message)


def _planned(shape: Shape, value: Any) -> bool:
    """Whether every key of `value` the shape describes is planned: the check every message
    pays, hence plain loops, early exits and no allocation (the walk below lists them)."""
    if type(value) is dict:
        keys = shape.keys
        if keys is not None and not keys.issuperset(value):
            if not shape.patterns:
                return False
            for name in value:
                if name not in keys and not any(p.search(name) for p in shape.patterns):
                    return False
        for name, child in shape.children.items():
            sub = value.get(name)
            if sub is not None and not _planned(child, sub):
                return False
    elif type(value) is list and shape.items is not None:
        items = shape.items
        for item in value:
            if not _planned(items, item):
                return False
    return True


def _unplanned(shape: Shape, value: Any, prefix: Path_) -> Iterable[Found]:
    if isinstance(value, dict):
        if shape.keys is not None:
            extra = value.keys() - shape.keys
            for name in sorted(extra):
                if not any(p.search(name) for p in shape.patterns):
                    yield Found(UNPLANNED_PROPERTY, (*prefix, name), "properties",
                                f"{name!r} is not in the plan")
        for name, child in shape.children.items():
            if name in value:
                yield from _unplanned(child, value[name], (*prefix, name))
    elif isinstance(value, list) and shape.items is not None:
        for index, item in enumerate(value):
            yield from _unplanned(shape.items, item, (*prefix, index))


def _rule(schema: Any, schema_path: Iterable[str | int], keyword: str) -> str:
    """`minimum: 0`, `enum: ["USD", "EUR"]`: the keyword with its value when it can be found
    (through a `$ref` it cannot: the keyword alone)."""
    node = schema
    for key in schema_path:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return keyword
    text = json.dumps(node, ensure_ascii=False)
    return f"{keyword}: {text if len(text) <= 200 else text[:197] + '...'}"


def _one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= 300 else line[:297] + "..."
