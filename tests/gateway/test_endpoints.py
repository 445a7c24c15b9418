"""The other paths: analytics.js settings and telemetry, health, readiness, metrics."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.conftest import Server
from tests.gateway.helpers import new_id, post
from trackd.log.reader import LogReader


def heads(server: Server) -> dict[str, int]:
    reader = LogReader(server.data_dir / "log")
    try:
        return reader.heads()
    finally:
        reader.close()


@pytest.mark.parametrize("key", ["wk_web", "wk_backend_2"])
def test_settings_point_analytics_js_back_at_this_server(live: Server, key: str) -> None:
    response = httpx.get(f"{live.url}/v1/projects/{key}/settings")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    segment = response.json()["integrations"]["Segment.io"]
    assert segment["apiKey"] == key
    assert segment["apiHost"] == f"127.0.0.1:{live.port}/v1"
    assert segment.get("protocol", "https") == "http"


def test_settings_for_an_unknown_key_is_404(live: Server) -> None:
    response = httpx.get(f"{live.url}/v1/projects/wk_nope/settings")
    assert response.status_code == 404
    assert response.json()["success"] is False


def test_telemetry_is_accepted_and_nothing_is_stored(live: Server) -> None:
    before = heads(live)
    metrics = {"series": [{"type": "Counter", "metric": "analytics_js.invoke", "value": 1,
                           "tags": {"method": "track"}}]}
    for key in ("wk_web", None):
        response = post(live, "/v1/m", metrics, key=key, headers={"Content-Type": "text/plain"})
        assert response.status_code == 200
        assert response.json() == {"success": True}
    assert post(live, "/v1/m", b"not json", key=None).status_code == 200
    assert heads(live) == before


def test_health_and_readiness(live: Server) -> None:
    assert httpx.get(live.url + "/healthz").status_code == 200
    ready = httpx.get(live.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert isinstance(ready.json()["stages"], list)  # per stage: name, state, lag


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (labels matched as a subset), 0 when absent."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(3) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(4))
    return total


def test_metrics_count_requests_messages_and_commits(live: Server) -> None:
    post(live, "/v1/track", {"userId": "u", "event": "E", "messageId": new_id()})
    post(live, "/v1/track", {"userId": "u"})
    post(live, "/v1/identify", {"userId": "u"}, key="wk_nope")
    post(live, "/v1/batch", {"batch": [{"type": "page", "userId": "u"},
                                       {"type": "page"}]}, key="wk_backend")
    response = httpx.get(live.url + "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert sample(text, "trackd_http_requests_total", path="/v1/track", status="200") >= 1
    assert sample(text, "trackd_http_requests_total", path="/v1/track", status="400") >= 1
    assert sample(text, "trackd_http_requests_total", path="/v1/identify", status="401") >= 1
    assert sample(text, "trackd_http_requests_total", path="/v1/batch", status="200") >= 1
    assert sample(text, "trackd_messages_accepted_total", source="web", type="track") >= 1
    assert sample(text, "trackd_messages_accepted_total", source="backend", type="page") >= 1
    assert sample(text, "trackd_messages_refused_total") >= 2
    assert sample(text, "trackd_messages_refused_total",
                  reason="Missing required field") >= 2
    for histogram in ("trackd_log_commit_seconds", "trackd_log_messages_per_commit"):
        assert f"# TYPE {histogram} histogram" in text
        assert sample(text, f"{histogram}_count") > 0
        assert sample(text, f"{histogram}_sum") > 0
        assert sample(text, f"{histogram}_bucket", le="+Inf") == sample(text,
                                                                       f"{histogram}_count")
