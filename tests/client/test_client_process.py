"""The module-level API, and what happens across import, fork and interpreter exit.

Fork and exit are tested in child Python processes, so this process never forks and its
exit hooks stay untouched.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

import trackd
import trackd.client as analytics
from tests.client.client_fault_server import FaultServer, Reply
from trackd.client import Client, ConfigurationError, Message

ROOT = Path(trackd.__file__).resolve().parents[1]


def run_python(script: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def module_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Restore the module's settings and default client after the test."""
    for name in ("write_key", "host", "on_error", "flush_interval", "sync_mode", "gzip"):
        monkeypatch.setattr(analytics, name, getattr(analytics, name))
    monkeypatch.setattr(analytics, "default_client", None)
    yield
    analytics.shutdown(timeout=10)


def test_the_module_level_api_uses_one_default_client(module_settings: None) -> None:
    with FaultServer() as server:
        analytics.write_key = "WK_module"
        analytics.host = server.url
        analytics.flush_interval = 0.01
        sent: list[Message] = [
            analytics.identify("user123", {"plan": "pro"})[1],
            analytics.track(user_id="user123", event="Product Purchased", properties={"a": 1})[1],
            analytics.page("user123", "Docs", "Home")[1],
            analytics.screen("user123", "App", "Settings")[1],
            analytics.group("user123", "acme", {"size": 3})[1],
            analytics.alias("anon-1", "user123")[1],
        ]
        client = analytics.default_client
        assert isinstance(client, Client)
        assert analytics.flush(timeout=10)
        assert analytics.join(timeout=10)
        assert analytics.shutdown(timeout=10)
        assert analytics.default_client is None
        delivered = server.delivered()
        assert {r.body["writeKey"] for r in server.requests} == {"WK_module"}
    assert [m["messageId"] for m in delivered] == [m["messageId"] for m in sent]
    assert [m["type"] for m in delivered] == [
        "identify",
        "track",
        "page",
        "screen",
        "group",
        "alias",
    ]


def test_settings_changed_after_shutdown_apply_to_the_next_call(module_settings: None) -> None:
    with FaultServer() as first, FaultServer() as second:
        analytics.write_key = "wk"
        analytics.host = first.url
        analytics.track("u", "To the first")
        analytics.shutdown(timeout=10)
        analytics.host = second.url
        analytics.gzip = True
        analytics.track("u", "To the second")
        analytics.shutdown(timeout=10)
        assert [m["event"] for m in first.delivered()] == ["To the first"]
        assert [m["event"] for m in second.delivered()] == ["To the second"]
        assert second.requests[0].headers["content-encoding"] == "gzip"


def test_module_calls_without_a_write_key_are_a_configuration_error(
    module_settings: None,
) -> None:
    analytics.write_key = None
    with pytest.raises(ConfigurationError, match="write_key"):
        analytics.track("u", "E")
    assert analytics.flush() is True  # nothing to flush, nothing raised


def test_importing_the_client_imports_only_the_standard_library() -> None:
    result = run_python(
        """
        import sys
        before = set(sys.modules)
        import trackd.client
        new = set(sys.modules) - before
        outside = sorted(
            name for name in new
            if name.split(".")[0] not in sys.stdlib_module_names and name.split(".")[0] != "trackd"
        )
        heavy = {"msgspec", "uvicorn", "uvloop", "duckdb", "pyarrow", "starlette", "httpx"}
        loaded = sorted(name for name in sys.modules if name.split(".")[0] in heavy)
        if outside or loaded:
            raise SystemExit(f"imported {outside} {loaded}")
        """
    )
    assert result.returncode == 0, result.stderr


def test_a_forked_child_sends_its_own_events_and_never_the_parents() -> None:
    # The first request to arrive hangs until the client's timeout, and nothing is delivered
    # before it, so at the fork the parent's consumer holds at most "Before 1" (flush_at=1)
    # and "Before 2" and "Before 3" are certainly still in the parent's queue.
    script = """
        import os, sys
        import trackd.client as analytics

        analytics.write_key = "WK_fork"
        analytics.host = sys.argv[1]
        analytics.flush_at = 1
        analytics.timeout = 0.5
        for n in (1, 2, 3):
            analytics.track("parent", f"Before {n}", context={"pid": os.getpid()})
        child = os.fork()
        if child == 0:
            analytics.track("child", "In Child", context={"pid": os.getpid()})
            os._exit(0 if analytics.shutdown(timeout=10) else 3)
        _, status = os.waitpid(child, 0)
        analytics.track("parent", "After Fork", context={"pid": os.getpid()})
        delivered = analytics.shutdown(timeout=10)
        sys.exit(os.waitstatus_to_exitcode(status) or (0 if delivered else 4))
    """
    with FaultServer([Reply(hang=True)]) as server:
        result = run_python(script, server.url)
        delivered = server.delivered()
        statuses = [request.status for request in server.requests]
    assert result.returncode == 0, result.stderr
    assert statuses.count(0) == 1  # the hung request was retried, and counted once below
    events = sorted(m["event"] for m in delivered)
    seen = [(r.status, [m["event"] for m in r.batch]) for r in server.requests]
    assert events == ["After Fork", "Before 1", "Before 2", "Before 3", "In Child"], (
        f"requests (status, events): {seen}; child stderr: {result.stderr[-2000:]}")
    pids = {m["event"]: m["context"]["pid"] for m in delivered}
    assert pids["In Child"] != pids["Before 2"] == pids["After Fork"]


def test_interpreter_exit_delivers_what_is_queued() -> None:
    script = """
        import sys
        import trackd.client as analytics

        analytics.write_key = "wk"
        analytics.host = sys.argv[1]
        analytics.flush_interval = 60
        for n in range(5):
            analytics.track("u", "Queued At Exit", {"n": n})
    """
    with FaultServer() as server:
        result = run_python(script, server.url)
        delivered = server.delivered()
    assert result.returncode == 0, result.stderr
    assert [m["properties"]["n"] for m in delivered] == [0, 1, 2, 3, 4]


def test_exit_waits_at_most_exit_timeout_and_reports_what_is_lost() -> None:
    script = """
        import sys
        from trackd.client import Client

        def on_error(error, batch):
            sys.stderr.write(f"{type(error).__name__} {len(batch)}\\n")

        client = Client("wk", sys.argv[1], exit_timeout=0.3, on_error=on_error, backoff_base=60)
        client.track("u", "Lost At Exit")
    """
    with FaultServer(default=Reply(503)) as server:
        result = run_python(script, server.url, timeout=20)
        assert len(server.requests) == 1
    assert result.returncode == 0, result.stderr
    assert "ClientClosedError 1" in result.stderr
