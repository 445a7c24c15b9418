"""The real SDKs, at pinned versions, pointed at a running trackd over HTTP.

Each SDK drives all six calls. Its driver records every request exactly as it went on the
wire; each message must be in the log exactly as sent, plus the enrichment: the original
fields unchanged (the client's `timestamp` kept as `originalTimestamp`, `context` gaining
only `ip`), and receivedAt, sentAt, the skew-corrected timestamp and version added.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Server
from tests.gateway.helpers import GATEWAY_CONFIG, running_server
from trackd.log.reader import LogReader

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"
PY_DRIVER = HERE / "py_driver.py"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
SDK234_PYTHON = ROOT / ".venv-sdk234" / "bin" / "python"
ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TYPES = {"identify", "track", "page", "screen", "group", "alias"}


@dataclass(frozen=True)
class Sdk:
    name: str
    version: str  # context.library.version it must report
    write_key: str
    source: str
    gzip: bool  # whether its requests are gzipped
    key_in_body: bool
    key_in_header: bool

    def command(self, url: str, tag: str) -> tuple[list[str], Path | None]:
        if self.name == "analytics-node":
            return ["node", str(NODE_DIR / "driver.js"), url, self.write_key, tag], NODE_DIR
        python = SDK234_PYTHON if self.version == "2.3.4" else VENV_PYTHON
        module = "rudder" if self.name == "rudder" else "segment"
        gzip_arg = "default" if self.name == "rudder" else ("1" if self.gzip else "0")
        return [str(python), str(PY_DRIVER), module, url, self.write_key, tag, gzip_arg], None


SDKS = [
    Sdk("segment-analytics-python", "2.4.0", "wk_web", "web", False, True, True),
    Sdk("segment-analytics-python-gzip", "2.4.0", "wk_backend", "backend", True, True, True),
    Sdk("segment-analytics-python", "2.3.4", "wk_backend_2", "backend", False, True, False),
    Sdk("analytics-node", "3.1.0", "wk_web", "web", False, True, True),
    Sdk("rudder", "2.1.9", "wk_backend", "backend", True, False, True),
]
IDS = [f"{s.name}-{s.version}" for s in SDKS]


def missing_prerequisite(sdk: Sdk) -> str | None:
    if sdk.name == "analytics-node":
        if shutil.which("node") is None:
            return "node is not installed"
        if not (NODE_DIR / "node_modules" / "@segment" / "analytics-node").is_dir():
            return "run ./scripts/install-sdks (npm install in tests/sdk/node)"
    if sdk.version == "2.3.4" and not SDK234_PYTHON.exists():
        return "run ./scripts/install-sdks (creates .venv-sdk234)"
    return None


@pytest.fixture(scope="module")
def sdk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("sdk") / "data", GATEWAY_CONFIG) as server:
        yield server


@pytest.fixture(scope="module")
def runs(sdk_server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every SDK driven at once; what each driver printed, by SDK id."""
    workdir = tmp_path_factory.mktemp("sdk-cwd")  # no .env here (rudder loads one)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TEST_DATA_PLANE_URL", "TEST_WRITE_KEY", "PYTHONPATH")}

    def run(index: int) -> Any:
        sdk = SDKS[index]
        if missing_prerequisite(sdk):
            return None
        command, cwd = sdk.command(sdk_server.url, f"{index}")
        result = subprocess.run(command, cwd=cwd or workdir, env=env, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, f"{IDS[index]} failed: {result.stderr[-3000:]}"
        return json.loads(result.stdout.strip().splitlines()[-1])

    with ThreadPoolExecutor(len(SDKS)) as pool:
        outputs = list(pool.map(run, range(len(SDKS))))
    return dict(zip(IDS, outputs, strict=True))


def log_record(server: Server, message_id: str) -> tuple[str, str, dict[str, Any]]:
    reader = LogReader(server.data_dir / "log")
    try:
        records = reader.find(message_id)
    finally:
        reader.close()
    assert len(records) == 1, f"{message_id}: {len(records)} records in the log"
    return records[0].source, records[0].type, json.loads(records[0].body)


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


def assert_stored_as_sent(sent: dict[str, Any], envelope: dict[str, Any],
                          stored: dict[str, Any]) -> None:
    for name, value in sent.items():
        if name == "timestamp":
            assert stored["originalTimestamp"] == value
        elif name == "context":
            assert stored["context"] == {**value, "ip": "127.0.0.1"}
        else:
            assert stored[name] == value, name
    added = set(stored) - set(sent)
    assert added <= {"receivedAt", "sentAt", "version", "originalTimestamp", "context"}
    assert {"receivedAt", "version"} <= added
    assert "writeKey" not in stored
    assert stored["version"] == 2
    sent_at = sent.get("sentAt", envelope.get("sentAt"))
    assert stored["sentAt"] == sent_at
    assert_skew_corrected(stored, sent_at, sent["timestamp"])


def assert_skew_corrected(stored: dict[str, Any], sent_at: str, timestamp: str) -> None:
    """timestamp = receivedAt - (sentAt - originalTimestamp), to the millisecond.

    The server computes it from its precise clock reading; receivedAt shows that reading cut
    to milliseconds, so the two can differ by less than 1 ms.
    """
    expected = at(stored["receivedAt"]) - (at(sent_at) - at(timestamp))
    assert ISO_MS_Z.match(stored["timestamp"])
    assert abs(at(stored["timestamp"]) - expected) < timedelta(milliseconds=1.001)


@pytest.mark.parametrize("sdk", SDKS, ids=IDS)
def test_sdk_messages_are_stored_exactly_as_sent_plus_enrichment(
        sdk: Sdk, runs: dict[str, Any], sdk_server: Server) -> None:
    reason = missing_prerequisite(sdk)
    if reason:  # a missing SDK is a failure: a skipped SDK test would prove nothing
        pytest.fail(reason)
    out = runs[f"{sdk.name}-{sdk.version}"]
    assert out["errors"] == []
    requests = out["requests"]
    assert requests, "the SDK sent nothing"
    if "responses" in out:  # analytics-node reports answers separately
        assert [r["status"] for r in out["responses"]] == [200] * len(requests)
        assert out["callbacks"] == [None] * 7
    else:
        assert [r["status"] for r in requests] == [200] * len(requests)

    items: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for request in requests:
        assert request["url"] == f"{sdk_server.url}/v1/batch"
        headers = {k.lower(): v for k, v in request["headers"].items()}
        assert (headers.get("content-encoding") == "gzip") == sdk.gzip
        assert ("writeKey" in request["body"]) == sdk.key_in_body
        has_header = "authorization" in headers or request.get("auth_user") is not None
        assert has_header == sdk.key_in_header
        items += [(item, request["body"]) for item in request["body"]["batch"]]

    assert len(items) == 7
    assert {item["type"] for item, _ in items} == TYPES
    for item, envelope in items:
        assert item["context"]["library"]["version"] == sdk.version
        source, kind, stored = log_record(sdk_server, item["messageId"])
        assert (source, kind) == (sdk.source, item["type"])
        assert_stored_as_sent(item, envelope, stored)

    if "returned" in out:  # what the Python SDK's calls returned is what went on the wire
        on_wire = {item["messageId"]: item for item, _ in items}
        assert {m["messageId"]: m for m in out["returned"]} == on_wire


def test_the_explicit_client_timestamp_is_kept_and_corrected(runs: dict[str, Any],
                                                             sdk_server: Server) -> None:
    """Each driver sends one track with timestamp 2024-05-01T12:00:00.123Z (node: .000Z)."""
    checked = 0
    for sdk_id, out in runs.items():
        if out is None:
            continue
        for request in out["requests"]:
            for item in request["body"]["batch"]:
                if item.get("event") != "Viewed":
                    continue
                _, _, stored = log_record(sdk_server, item["messageId"])
                assert at(stored["originalTimestamp"]) in (
                    at("2024-05-01T12:00:00.123Z"), at("2024-05-01T12:00:00.000Z")), sdk_id
                assert stored["integrations"] == {**item["integrations"]}
                assert_skew_corrected(stored, stored["sentAt"], stored["originalTimestamp"])
                # same clock on both sides: the correction changes (almost) nothing
                assert abs(at(stored["timestamp"]) - at(stored["originalTimestamp"])) < \
                    timedelta(seconds=10)
                checked += 1
    assert checked == sum(1 for out in runs.values() if out is not None)
