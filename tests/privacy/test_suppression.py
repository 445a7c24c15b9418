"""Suppressed subjects: answered 200, stored nowhere, counted; across workers and restarts."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from tests.conftest import Server, eventually
from tests.gateway.helpers import new_id, post, stored
from tests.privacy.common import CONFIG, RUN, files_holding, finished, regulate


def _suppressed_count(server: Server) -> float:
    text = httpx.get(server.url + "/metrics", timeout=30).text
    found = re.search(r'^trackd_messages_suppressed_total\{source="web"\} (\S+)$', text, re.M)
    return float(found[1]) if found else 0.0


def test_suppression_holds_on_every_worker_and_across_a_restart(
        make_server: Callable[..., Server]) -> None:
    server = make_server(CONFIG.format(delay=0.2), workers=2)
    user, anonymous = f"hushed-{RUN}-user", f"hushed-{RUN}-anon"
    before = new_id()
    assert post(server, "/v1/track", {"userId": user, "event": "Before",
                                      "messageId": before}).status_code == 200
    done = server.run_cli("privacy", "suppress", "--user-id", user, "--anonymous-id",
                          anonymous, "--wait")
    assert done.stdout.count("SUPPRESS_ONLY") == 4  # two recorded, two finished
    assert stored(server, before)  # suppression is not deletion: what came before stays

    def send_all() -> list[str]:
        ids = []
        for _ in range(6):  # connections land on both workers
            single, batched, anon_only = new_id(), new_id(), new_id()
            ids += [single, batched, anon_only]
            assert post(server, "/v1/track", {"userId": user, "event": "Hushed",
                                              "messageId": single}).status_code == 200
            answer = post(server, "/v1/batch", {"batch": [
                {"type": "track", "userId": user, "event": "Hushed", "messageId": batched},
                {"type": "page", "anonymousId": anonymous, "messageId": anon_only}]})
            assert answer.status_code == 200 and answer.json() == {"success": True,
                                                                   "accepted": 2}
        return ids

    hushed = send_all()
    other = new_id()
    assert post(server, "/v1/track", {"userId": f"free-{RUN}", "event": "Free",
                                      "messageId": other}).status_code == 200
    assert stored(server, other)
    assert not any(stored(server, m) for m in hushed)
    assert files_holding(server.data_dir, b"Hushed") == []  # nowhere, not even the quarantine
    assert eventually(lambda: _suppressed_count(server) >= 18)

    server.stop()
    server.start()
    hushed = send_all()
    assert not any(stored(server, m) for m in hushed)

    finished(server, regulate(server, "UNSUPPRESS", [user]))
    again = new_id()
    assert post(server, "/v1/track", {"userId": user, "event": "Back",
                                      "messageId": again}).status_code == 200
    assert stored(server, again)
    still = new_id()  # the anonymous id was not lifted
    assert post(server, "/v1/track", {"anonymousId": anonymous, "event": "Hushed",
                                      "messageId": still}).status_code == 200
    assert not stored(server, still)
