"""Logging and Prometheus metrics, with one calling convention for every stage.

Each process keeps its own counters and histograms and writes a snapshot every couple of
seconds to `<data_dir>/run/metrics/<process>.json`; `/metrics` renders its own live values plus
every other process's snapshot, summed by (name, labels). Gauges are set by the process that
owns them (the pipeline process owns log size and lag), so summing never double counts.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

Labels = tuple[str, ...]
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)


def get_logger(stage: str) -> logging.Logger:
    return logging.getLogger(f"trackd.{stage}")


_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
LOG_LEVELS = ("debug", "info", "warning", "error")
_QUIET_LIBRARIES = ("httpx", "httpcore")  # httpx: one INFO line per request, URL and all
_MALFORMED = "Invalid HTTP request received."  # uvicorn, once per request it answers 400
_QUERY = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#\"'<>]*)\?[^\s#\"'<>]*")


class FieldsFormatter(logging.Formatter):
    """Appends the structured fields given with `extra={...}` as `key=value` pairs.

    URLs lose their query string (`?token=...` is a credential more often than not).
    """

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        fields = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if fields:
            text += " " + " ".join(f"{k}={v!r}" if isinstance(v, str) and " " in v
                                   else f"{k}={v}" for k, v in fields.items())
        return _QUERY.sub(r"\1", text)


def configure_logging(level: str = "info") -> None:
    """Log lines on stderr: time, level, logger, message and its fields.

    `level` is one of LOG_LEVELS (`server.log_level`, `trackd serve --log-level`). At info,
    trackd writes a line per notable event; libraries only warnings and errors, except
    uvicorn's line per malformed request (at debug, those, and httpx's line per outgoing
    request, without its query string).
    """
    number = logging.getLevelName(level.upper())
    handler = logging.StreamHandler()
    handler.setFormatter(FieldsFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=number, handlers=[handler], force=True)
    for name in _QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.INFO if number <= logging.DEBUG
                                         else logging.WARNING)
    if number > logging.DEBUG:
        # Any client could fill the log with malformed requests; they get their 400 anyway.
        logging.getLogger("uvicorn.error").addFilter(
            lambda record: record.getMessage() != _MALFORMED)


class _Metric:
    kind = "counter"

    def __init__(self, name: str, help: str, labels: Labels = ()) -> None:
        self.name, self.help, self.labels = name, help, labels


class Counter(_Metric):
    def __init__(self, name: str, help: str, labels: Labels = ()) -> None:
        super().__init__(name, help, labels)
        self.values: dict[Labels, float] = {}

    def inc(self, labels: Labels = (), amount: float = 1.0) -> None:
        self.values[labels] = self.values.get(labels, 0.0) + amount


class Gauge(Counter):
    kind = "gauge"

    def set(self, labels: Labels, value: float) -> None:
        self.values[labels] = value


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name: str, help: str, buckets: tuple[float, ...],
                 labels: Labels = ()) -> None:
        super().__init__(name, help, labels)
        self.buckets = buckets
        self.values: dict[Labels, list[float]] = {}  # per bucket counts + [sum, count]

    def observe(self, value: float, labels: Labels = (), count: int = 1) -> None:
        """Record `value` (`count` times: e.g. once per message of a batch that share it)."""
        row = self.values.get(labels)
        if row is None:
            row = self.values[labels] = [0.0] * (len(self.buckets) + 2)
        i = bisect_left(self.buckets, value)
        if i < len(self.buckets):
            row[i] += count
        row[-2] += value * count
        row[-1] += count


class Registry:
    def __init__(self) -> None:
        self._metrics: dict[str, Counter | Histogram] = {}
        self._lock = threading.Lock()
        self._collectors: list[Callable[[], None]] = []

    def counter(self, name: str, help: str, labels: Labels = ()) -> Counter:
        return self._add(Counter(name, help, labels))  # type: ignore[return-value]

    def gauge(self, name: str, help: str, labels: Labels = ()) -> Gauge:
        return self._add(Gauge(name, help, labels))  # type: ignore[return-value]

    def histogram(self, name: str, help: str, buckets: tuple[float, ...] = _LATENCY_BUCKETS,
                  labels: Labels = ()) -> Histogram:
        return self._add(Histogram(name, help, buckets, labels))  # type: ignore[return-value]

    def on_collect(self, fn: Callable[[], None]) -> None:
        """Run `fn` before each snapshot/render (to refresh gauges)."""
        self._collectors.append(fn)

    def _add(self, metric: Counter | Histogram) -> Counter | Histogram:
        with self._lock:
            return self._metrics.setdefault(metric.name, metric)

    def snapshot(self) -> dict[str, Any]:
        for fn in self._collectors:
            try:
                fn()
            except Exception:  # a collector must never break /metrics
                get_logger("metrics").exception("metrics collector failed")
        with self._lock:
            return {m.name: {"kind": m.kind, "help": m.help, "labels": list(m.labels),
                             "buckets": list(getattr(m, "buckets", ())),
                             "values": [[list(k), v] for k, v in list(m.values.items())]}
                    for m in self._metrics.values()}

    def dump(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.snapshot()))
        os.replace(tmp, path)


def render(snapshots: Iterable[dict[str, Any]]) -> str:
    """Prometheus text format of several snapshots, summed by (name, labels)."""
    merged: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        for name, m in snap.items():
            into = merged.setdefault(name, {**m, "values": {}})
            for labels, value in m["values"]:
                key = tuple(labels)
                if m["kind"] == "histogram":
                    old = into["values"].get(key)
                    into["values"][key] = value if old is None else [a + b for a, b in
                                                                    zip(old, value, strict=True)]
                elif m["kind"] == "gauge":
                    into["values"][key] = into["values"].get(key, 0.0) + value
                else:
                    into["values"][key] = into["values"].get(key, 0.0) + value
    lines: list[str] = []
    for name in sorted(merged):
        m = merged[name]
        lines.append(f"# HELP {name} {m['help']}")
        lines.append(f"# TYPE {name} {m['kind']}")
        for key, value in sorted(m["values"].items()):
            pairs = [f'{n}="{_escape(v)}"' for n, v in zip(m["labels"], key, strict=False)]
            if m["kind"] == "histogram":
                acc = 0.0
                for bound, count in zip(m["buckets"], value, strict=False):
                    acc += count
                    le = ",".join([*pairs, f'le="{bound}"'])
                    lines.append(f"{name}_bucket{{{le}}} {acc:g}")
                le = ",".join([*pairs, 'le="+Inf"'])
                lines.append(f"{name}_bucket{{{le}}} {value[-1]:g}")
                lab = "{" + ",".join(pairs) + "}" if pairs else ""
                lines.append(f"{name}_sum{lab} {value[-2]:g}")
                lines.append(f"{name}_count{lab} {value[-1]:g}")
            else:
                lab = "{" + ",".join(pairs) + "}" if pairs else ""
                lines.append(f"{name}{lab} {value:g}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def read_snapshots(directory: Path, exclude: str) -> list[dict[str, Any]]:
    """Snapshots written by the other processes of this server."""
    out: list[dict[str, Any]] = []
    if directory.is_dir():
        for path in directory.glob("*.json"):
            if path.stem == exclude:
                continue
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue  # being replaced right now; the next scrape sees it
    return out


SIZE_BUCKETS = _SIZE_BUCKETS
