"""The server log: a line per notable event by default, more with --log-level debug.

No line per request or delivery, no URL query string (a webhook's `?token=`), no user id,
email or internal host name, even after many deliveries and Profile API lookups.
"""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from collections.abc import Callable

from tests.conftest import Server, eventually
from tests.destinations.receiver import Receiver, Reply
from tests.destinations.test_end_to_end import config, webhook

MakeServer = Callable[..., Server]
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING|ERROR) ",
                      re.MULTILINE)


def hooks(*receivers: Receiver, extra: str = "") -> str:
    """The test config with a webhook per receiver, each URL carrying a secret token."""
    return config(*(webhook(f"hook{i}", f"{r.url}/in?token=s3cret-{i}", extra)
                    for i, r in enumerate(receivers)))


def deliver_and_look_up(server: Server, receivers: list[Receiver], count: int) -> None:
    with server.client() as client:
        batch = [{"type": "identify", "userId": f"person-{i}", "messageId": str(uuid.uuid4()),
                  "traits": {"email": f"person{i}@example.org"}} for i in range(count)]
        for start in range(0, count, 100):
            response = client.post("/v1/batch", auth=("wk_web", ""),
                                   json={"batch": batch[start:start + 100]})
            assert response.status_code == 200, response.text
        eventually(lambda: all(len(r.accepted()) == count for r in receivers), timeout=60)
        profiles = "/v1/spaces/s/collections/users/profiles"
        eventually(lambda: all(client.get(f"{profiles}/email:person{i}@example.org/traits",
                                          auth=("test-admin-token", "")).status_code == 200
                               for i in range(5)))
        for i in range(5):
            client.get(f"{profiles}/user_id:person-{i}/events", auth=("test-admin-token", ""))
            client.get(f"/api/v1/events/{batch[i]['messageId']}",
                       headers={"Authorization": "Bearer test-admin-token"})


def test_many_deliveries_and_lookups_leave_a_handful_of_lines(make_server: MakeServer
                                                              ) -> None:
    receivers = [Receiver().start(), Receiver().start()]
    try:
        server = make_server(hooks(*receivers))
        deliver_and_look_up(server, receivers, 300)
        server.stop()
    finally:
        for receiver in receivers:
            receiver.stop()
    log = server.output.read_text()
    lines = LOG_LINE.findall(log)
    assert 1 <= len(lines) <= 6, log
    assert "pipeline started" in log and "pipeline stopped" in log
    for secret in ("token=", "s3cret", "person", "example.org", "trackd-admin", "HTTP Request"):
        assert secret not in log, (secret, log)


def test_log_level_debug_shows_more(make_server: MakeServer) -> None:
    receivers = [Receiver().start()]
    try:
        server = make_server(hooks(*receivers), start=False)
        server.start("--log-level", "debug")
        deliver_and_look_up(server, receivers, 20)
        server.stop()
    finally:
        receivers[0].stop()
    log = server.output.read_text()
    assert len(LOG_LINE.findall(log)) > 20, log
    assert "DEBUG" in log and "HTTP Request: POST" in log and "stage started" in log
    assert "token=" not in log and "s3cret" not in log, log


def test_log_level_setting_from_the_environment(make_server: MakeServer) -> None:
    server = make_server(hooks(), env={"TRACKD_SERVER_LOG_LEVEL": "warning"})
    server.stop()
    assert LOG_LINE.findall(server.output.read_text()) == []
    bad = make_server(hooks(), start=False, name="bad")
    result = subprocess.run(bad.command("serve", "--port", "0"), capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "TRACKD_SERVER_LOG_LEVEL": "loud"})
    assert result.returncode != 0
    assert "TRACKD_SERVER_LOG_LEVEL: must be one of debug, info, warning, error" in result.stderr


def test_a_destination_down_then_up_and_dead_letters_are_a_line_each(make_server: MakeServer
                                                                     ) -> None:
    receiver = Receiver().start()
    receiver.script(*[Reply(500)] * 6)
    receiver.rule = lambda request: Reply(400) if b"reject-me" in request.body else None
    try:
        # One request at a time: the answers come back in the order of the script.
        server = make_server(hooks(receiver, extra="concurrency = 1"))
        with server.client() as client:
            batch = [{"type": "track", "userId": f"u{i}", "event": "ok"} for i in range(10)]
            batch += [{"type": "track", "userId": f"r{i}", "event": "reject-me"}
                      for i in range(7)]
            assert client.post("/v1/batch", auth=("wk_web", ""),
                               json={"batch": batch}).status_code == 200
        eventually(lambda: len(receiver.accepted()) == 10, timeout=60)
        eventually(lambda: sum(1 for r in receiver.requests if r.status == 400) == 7)
        server.stop()
    finally:
        receiver.stop()
    log = server.output.read_text()
    assert log.count("destination down") == 1, log
    assert log.count("destination up") == 1, log
    dead = [int(n) for n in re.findall(r"messages dead-lettered .*messages=(\d+)", log)]
    assert 1 <= len(dead) <= 2 and sum(dead) == 7, log
    assert "will retry" not in log and "token=" not in log, log
