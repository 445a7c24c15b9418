"""IP and PII rules applied by a real server before the log: no stage sees the original."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tests.conftest import ROOT, Server
from tests.gateway.helpers import new_id, post, stored

CONFIG = """
[server]
admin_token = "test-admin-token"

[[sources]]
name = "web"
write_keys = ["wk_web"]
ip = "truncate"
pii = [{ path = "context.traits.email", action = "hash" },
       { path = "properties.card_number", action = "drop" }]

[[sources]]
name = "backend"
write_keys = ["wk_backend"]
ip = "drop"
"""


def _track(message_id: str, ip: str | None, **extra: object) -> dict[str, object]:
    context: dict[str, object] = {"traits": {"email": "ann@example.com"}}
    if ip is not None:
        context["ip"] = ip
    return {"type": "track", "event": "Paid", "userId": "u1", "messageId": message_id,
            "context": context, "properties": {"card_number": "4111111111111111", "amount": 3},
            **extra}


def test_ip_truncate_and_drop_pii_hash_and_drop_before_the_log(
        make_server: Callable[..., Server]) -> None:
    server = make_server(CONFIG)
    v4, v6, own, single = new_id(), new_id(), new_id(), new_id()
    answer = post(server, "/v1/batch", {"batch": [
        _track(v4, "203.0.113.77"), _track(v6, "2001:db8:85a3:8d3:1319:8a2e:370:7348"),
        _track(own, None)]})
    assert answer.status_code == 200, answer.text
    assert post(server, "/v1/track", _track(single, "198.51.100.9")).status_code == 200
    [a], [b], [c], [d] = (stored(server, m) for m in (v4, v6, own, single))
    assert a["context"]["ip"] == "203.0.113.0"
    assert b["context"]["ip"] == "2001:db8:85a3::"
    assert c["context"]["ip"] == "127.0.0.0"  # the client's address, truncated too
    assert d["context"]["ip"] == "198.51.100.0"
    hashed = a["context"]["traits"]["email"]
    assert len(hashed) == 64 and hashed == d["context"]["traits"]["email"]
    assert a["properties"] == {"amount": 3}
    dropped = new_id()
    assert post(server, "/v1/track", _track(dropped, "203.0.113.77"),
                key="wk_backend").status_code == 200
    [e] = stored(server, dropped)
    assert "ip" not in e["context"]
    assert e["context"]["traits"]["email"] == "ann@example.com"  # backend has no pii rule
    # refused messages go to the quarantine with the rules applied too
    refused = new_id()
    bad = _track(refused, "203.0.113.77")
    del bad["event"]
    assert post(server, "/v1/track", bad).status_code == 400
    with server.client() as client:
        rows = client.get("/api/v1/quarantine", headers={
            "Authorization": "Bearer test-admin-token"}).json()["quarantined"]
    body = next(r["body"] for r in rows if r["messageId"] == refused)
    assert "ann@example.com" not in body and "4111111111111111" not in body
    assert "203.0.113.77" not in body and hashed in body
    # the key is the data dir's: a restart hashes the same value the same way
    server.stop()
    server.start()
    again = new_id()
    assert post(server, "/v1/track", _track(again, "203.0.113.77")).status_code == 200
    assert stored(server, again)[0]["context"]["traits"]["email"] == hashed


def test_an_unknown_action_stops_serve_with_one_line(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[[sources]]\nname = "web"\nwrite_keys = ["k"]\n'
                      'pii = [{ path = "properties.card", action = "mask" }]\n')
    result = subprocess.run([sys.executable, "-m", "trackd", "serve", "--config", str(config),
                             "--data-dir", str(tmp_path / "d")], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "Error: sources[web].pii[0].action: must be hash or drop, got 'mask'")
