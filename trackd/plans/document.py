"""A plan file read as plain data, with the line of every value, for errors that point at it.

PyYAML's composer gives each node its position; the nodes are turned into plain dicts, lists
and scalars (safe tags only) while `lines` records, for each path of keys, the line (1-based)
where its value starts. A key given twice in one mapping is an error, not a silent overwrite.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trackd.errors import PlanError

Path_ = tuple[str | int, ...]


@dataclass
class Document:
    """A plan file's data and where each value is."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)
    problems: list[PlanError] = field(default_factory=list)
    """What reading found wrong without stopping (a key given twice, a key that is not text)."""

    def line(self, path: Iterable[str | int]) -> int:
        """The line of the value at `path`, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)

    def error(self, path: Iterable[str | int], message: str, *,
              line: int | None = None) -> PlanError:
        """The error of the field at `path` (on its line, unless `line` is given)."""
        path = tuple(path)
        line = self.line(path) if line is None else line
        return PlanError(f"{self.file}:{line}: {dotted(path) or '(plan)'}: {message}", line=line)


def dotted(path: Iterable[str | int]) -> str:
    """`events.Order Completed.properties` for a path of keys (list indices as `[0]`)."""
    out = ""
    for key in path:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += f".{key}" if out else str(key)
    return out


def read(path: Path, *, shown_as: str | None = None) -> Document:
    """Parse the YAML file at `path`; PlanError (one line, with the line number) when it is not
    a readable YAML mapping."""
    name = shown_as or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PlanError(f"{name}: tracking plan not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PlanError(f"{name}: cannot read the tracking plan: {exc}") from None
    return parse(text, name)


def parse(text: str, name: str) -> Document:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        raise PlanError(f"{name}:{line}: not valid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise PlanError(f"{name}:1: not valid YAML: {exc}") from None
    doc = Document(name, None)
    if node is None:
        raise PlanError(f"{name}:1: the tracking plan is empty")
    try:
        doc.data = _build(node, (), doc)
    except RecursionError:
        raise PlanError(f"{name}:1: nested too deep (or an alias that contains itself)"
                        ) from None
    if not isinstance(doc.data, dict):
        raise PlanError(f"{name}:1: a tracking plan must be a mapping (name, version, events...)")
    return doc


_CONSTRUCTOR = yaml.SafeLoader("")


def _build(node: yaml.Node, path: Path_, doc: Document) -> Any:
    doc.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        _CONSTRUCTOR.flatten_mapping(node)  # YAML merge keys (<<)
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = _key(key_node, doc, path)
            if key is None:
                continue
            if key in out:  # the first one stays; the error points at the second
                doc.problems.append(doc.error((*path, key), "this key is given twice",
                                              line=key_node.start_mark.line + 1))
                continue
            doc.lines[(*path, key)] = value_node.start_mark.line + 1
            out[key] = _build(value_node, (*path, key), doc)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), doc) for i, item in enumerate(node.value)]
    return _scalar(node, doc)


def _key(node: yaml.Node, doc: Document, path: Path_) -> str | None:
    """A mapping key as written: always text (YAML 1.1 would read `on:` or `yes:` as true);
    None (and a problem noted) when it is not a plain value."""
    if not isinstance(node, yaml.ScalarNode):
        doc.problems.append(doc.error(path, "a key must be a plain value",
                                      line=node.start_mark.line + 1))
        return None
    return str(node.value)


def _scalar(node: yaml.Node, doc: Document) -> Any:
    try:
        value = _CONSTRUCTOR.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        line = node.start_mark.line + 1
        raise PlanError(f"{doc.file}:{line}: not valid YAML: {exc}", line=line) from None
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(node.value)  # dates and timestamps (YAML 1.1 implicit types): the text written
