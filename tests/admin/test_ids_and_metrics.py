"""Ids round-trip exactly through the CLI, the admin proxy and the admin API; admin and Profile
API requests are counted in the metrics."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

from tests.conftest import Server, eventually

ADMIN = {"Authorization": "Bearer test-admin-token"}
IDS = ["abc?def", "abc#def", "100%", "%41bc", "cr\rhere", "tab\there", "new\nline", "a/b/c",
       "sp ace", "ümlaut", "end\n"]


def test_ids_with_special_characters_round_trip(server: Server) -> None:
    with server.client() as client:
        for i, message_id in enumerate(IDS):
            response = client.post("/v1/track", auth=("wk_web", ""), json={
                "userId": "u", "event": f"E{i}", "messageId": message_id})
            assert response.status_code == 200, response.text
        # Look-alikes that were never sent are not found: no id is cut short.
        for decoy in ["abc", "cr", "new", "end", "a", "100"]:
            answer = client.get(f"/api/v1/events/{quote(decoy, safe='')}", headers=ADMIN)
            assert answer.status_code == 404, (decoy, answer.text)
        for i, message_id in enumerate(IDS):
            answer = client.get(f"/api/v1/events/{quote(message_id, safe='')}", headers=ADMIN)
            assert answer.status_code == 200, (message_id, answer.text)
            doc = answer.json()
            assert doc["messageId"] == message_id
            assert doc["message"]["event"] == f"E{i}"
    for i, message_id in enumerate(IDS):
        shown = server.run_cli("events", "show", message_id, "--format", "json")
        doc = json.loads(shown.stdout[shown.stdout.index("{"):])
        assert doc["messageId"] == message_id and doc["message"]["event"] == f"E{i}", shown
    missing = server.run_cli("events", "show", "abc", "--format", "json", check=False)
    assert missing.returncode != 0 and "abc" in missing.stderr


def test_profile_cursor_of_5000_digits_is_a_400(server: Server) -> None:
    base = "/v1/spaces/s/collections/users/profiles/user_id:u"
    with server.client() as client:
        for query in ["next=" + "9" * 5000, "next=%C2%B2", "limit=" + "9" * 5000]:
            answer = client.get(f"{base}/events?{query}", auth=("test-admin-token", ""))
            assert answer.status_code == 400, (query[:20], answer.text)
            assert answer.json()["error"]["code"] == "validation_error"


def _count(text: str, path: str, status: str) -> float:
    pattern = (r'^trackd_http_requests_total\{path="' + re.escape(path) + r'",status="'
               + status + r'"\} (\S+)$')
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_admin_and_profile_requests_are_counted(server: Server) -> None:
    with server.client() as client:
        for _ in range(3):
            client.get("/api/v1/events/nope", headers=ADMIN)
        client.get("/api/v1/quarantine")  # no token
        client.get("/v1/spaces/s/collections/users/profiles/user_id:nobody/traits",
                   auth=("test-admin-token", ""))
        client.get("/openapi.json")

        def counted() -> bool:
            text = client.get("/metrics").text
            return (_count(text, "admin", "404") == 3 and _count(text, "admin", "401") == 1
                    and _count(text, "admin", "200") == 1
                    and _count(text, "profile", "404") == 1)

        eventually(counted)
        text = client.get("/metrics").text
    # Bounded labels: no raw admin path ever becomes a label value.
    assert "/api/" not in text and "/v1/spaces" not in text
