"""The CLI as a newcomer uses it: serve with no config, send, one-line errors."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, Server, eventually


def test_serve_with_no_config_prints_key_token_and_a_curl_that_works(tmp_path: Path) -> None:
    data = tmp_path / "fresh"
    proc = subprocess.Popen([sys.executable, "-m", "trackd", "serve", "--data-dir", str(data),
                             "--port", "0"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while not any("curl" in line for line in lines) and time.monotonic() < deadline:
            lines.append(proc.stdout.readline())
        text = "".join(lines)
        assert re.search(r"source app: write key wk_[0-9a-f]{32}", text), text
        # Not a terminal: the secret stays in credentials.json, not in a log of this output.
        token = json.loads((data / "credentials.json").read_text())["admin_token"]
        assert token not in text
        assert f"admin token: (not shown here) (kept in {data / 'credentials.json'})" in text
        curl = next(line for line in lines if "curl" in line).strip()
        result = subprocess.run(curl, shell=True, capture_output=True, text=True, timeout=30)
        assert result.stdout == '{"success":true}', result
        lookup = proc.stdout.readline().strip()
        assert re.fullmatch(r".* events show first-[0-9a-f]{8} --data-dir .*", lookup), lookup
        eventually(lambda: subprocess.run(lookup, shell=True, capture_output=True,
                                          text=True).returncode == 0)
        assert (data / "credentials.json").exists()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(30)
        if proc.stdout is not None:
            proc.stdout.close()
    assert code == 0


def test_send_a_first_event(server: Server) -> None:
    result = server.run_cli("send", "track", "--write-key", "wk_web", "--user-id", "u1",
                            "--event", "Button Clicked", "--properties", '{"plan": "pro"}')
    sent, lookup = result.stdout.splitlines()
    message_id = re.fullmatch(r"Sent track with messageId ([0-9a-f-]{36})", sent)
    assert message_id, result.stdout
    assert lookup.startswith("Look it up: ")
    assert lookup.endswith(f"events show {message_id[1]} --config {server.config_path} "
                           f"--data-dir {server.data_dir}")
    refused = server.run_cli("send", "track", "--write-key", "wk_web", "--user-id", "u1",
                             check=False)
    assert refused.returncode == 1
    assert refused.stdout == ""
    assert refused.stderr == "Error: refused (400): Missing required field: event\n"


def test_bad_config_is_one_line_and_no_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[server]\nport = 'eighty'\n")
    result = subprocess.run([sys.executable, "-m", "trackd", "serve", "--config", str(config),
                             "--data-dir", str(tmp_path / "d")], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode != 0
    assert result.stderr.strip() == "Error: server.port: expected an integer, got 'eighty'"
    assert "Traceback" not in result.stderr


def test_port_in_use_is_a_clear_error(server: Server, tmp_path: Path) -> None:
    other = Server(tmp_path / "other", "", workers=1)
    other.port = server.port
    result = subprocess.run([*other.command("serve"), "--port", str(server.port)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode != 0
    assert f"cannot listen on 127.0.0.1:{server.port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_stops_cleanly(server: Server) -> None:
    with server.client() as client:
        assert client.post("/v1/track", json={"userId": "u", "event": "e"},
                           auth=("wk_web", "")).status_code == 200
    assert server.stop() == 0
    run = server.data_dir / "run"
    assert not (run / "server.json").exists()
    assert not (run / "admin.sock").exists()  # nothing left that looks like a live server
    assert not list(run.glob("ready-*"))


def test_reading_commands_never_create_a_data_dir(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    for args in (["query", "SELECT 1"], ["events", "show", "m1"], ["quarantine"]):
        result = subprocess.run([sys.executable, "-m", "trackd", *args, "--data-dir",
                                 str(missing)], capture_output=True, text=True, cwd=tmp_path,
                                timeout=60)
        assert result.returncode == 1, result
        assert result.stderr.startswith("Error: no "), result.stderr
        assert "Traceback" not in result.stderr
    assert not missing.exists()
