"""The README and docs/ as a newcomer meets them: every example runs as written.

One server, started the README's way (`./scripts/serve`) in a fresh copy of the repository,
with nothing configured. Then: the banner's curl and lookup command, each README block in order
(`trackd send`, the lookup it prints, both SDK snippets, `events show`, the queries), and every
shell, Python, SQL and TOML block of docs/*.md. Only what a reader fills in is replaced: the
generated `<write key>` and `$ADMIN_TOKEN`, the `<messageId>` that `send` printed, and port
8088 (the test's server listens on a free port, the machine is shared). A block that cannot
run on the default setup carries `<!-- not run: why -->` on the line before it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, eventually
from trackd.settings import load

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = {"bash", "sh", "python", "sql", "toml"}
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->")


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    text: str
    skip: str | None
    project_file: bool = False  # `file=NAME`: part of the page's example project, run by its test

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)(.*)$", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        skip = NOT_RUN.search(lines[i - 1]) if i else None
        project_file = "file=" in fence[2]
        reason = skip[1] if skip else None
        if project_file:
            reason = f"a file of the page's example project ({fence[2].strip()})"
        found.append(Block(path, i + 1, fence[1], "\n".join(lines[i + 1:end]) + "\n",
                           reason, project_file))
        i = end + 1
    return found


@dataclass
class Newcomer:
    copy: Path
    port: int
    banner: list[str]
    write_key: str
    admin_token: str
    env: dict[str, str]

    def fill(self, text: str, **extra: str) -> str:
        text = text.replace("127.0.0.1:8088", f"127.0.0.1:{self.port}")
        text = text.replace("<write key>", self.write_key)
        for placeholder, value in extra.items():
            text = text.replace(f"<{placeholder}>", value)
        return text

    def run(self, block: Block, **extra: str) -> subprocess.CompletedProcess[str]:
        """Run `block`; docs/ write `trackd ...`, as with the venv activated (README blocks
        name .venv/bin/trackd and run without it)."""
        text = self.fill(block.text, **extra)
        env = self.env
        if block.path.parent.name == "docs":
            env = {**env, "PATH": f"{self.copy / '.venv' / 'bin'}{os.pathsep}{env['PATH']}"}
        if block.lang == "python":
            command = [str(self.copy / ".venv" / "bin" / "python"), "-c", text]
        elif block.lang == "sql":
            command = [str(self.copy / ".venv" / "bin" / "trackd"), "query", text]
        else:
            command = ["bash", "-e", "-o", "pipefail", "-c", text]
        return subprocess.run(command, cwd=self.copy, env=env, capture_output=True,
                              text=True, timeout=120)

    def sh(self, line: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-c", line], cwd=self.copy, env=self.env,
                              capture_output=True, text=True, timeout=60)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Newcomer]:
    # The shared .venv must be current, so the copy's ./scripts/serve finds nothing to install.
    subprocess.run([str(ROOT / "scripts" / "install")], check=True, timeout=600)
    copy = tmp_path_factory.mktemp("newcomer") / "trackd"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout.decode().split("\0")
    for name in filter(None, tracked):
        if (ROOT / name).is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, copy / name)
    (copy / ".venv").symlink_to(ROOT / ".venv")
    port = _free_port()
    env = {**os.environ, "TRACKD_SERVER_PORT": str(port)}
    proc = subprocess.Popen(["./scripts/serve"], cwd=copy, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        banner: list[str] = []
        while not banner or banner[-1].strip() != "Stop with Ctrl-C.":
            line = proc.stdout.readline()
            assert line, f"./scripts/serve ended: {''.join(banner)}"
            banner.append(line)
        credentials = json.loads((copy / "trackd-data" / "credentials.json").read_text())
        env["ADMIN_TOKEN"] = credentials["admin_token"]
        yield Newcomer(copy, port, banner, credentials["default_write_key"],
                       credentials["admin_token"], env)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
        if proc.stdout is not None:
            proc.stdout.close()


def test_the_banner_names_the_source_and_its_curl_and_lookup_work(newcomer: Newcomer) -> None:
    text = "".join(newcomer.banner)
    assert "Installing" not in text  # installed already: ./scripts/serve ran no pip
    assert f"source app: write key {newcomer.write_key}" in text
    assert newcomer.admin_token not in text  # not a terminal: the secret stays in the file
    curl = next(line for line in newcomer.banner if "curl" in line).strip()
    assert newcomer.sh(curl).stdout == '{"success":true}'
    lookup = next(line for line in newcomer.banner if "events show" in line).strip()
    assert lookup.startswith(".venv/bin/trackd events show first-")
    shown = eventually(lambda: (r := newcomer.sh(lookup)).returncode == 0
                       and "loaded into app.tracks" in r.stdout and r)
    assert shown.stdout.startswith("track 'Button Clicked' of 'user123' from source app")


def test_the_readme_runs_as_written_in_order(newcomer: Newcomer) -> None:
    runnable = [b for b in blocks(ROOT / "README.md")[1:] if b.lang in RUN]
    assert [b.lang for b in runnable] == ["bash", "python", "python", "bash"]
    send, segment_sdk, trackd_client, look = runnable
    sent = newcomer.run(send)
    assert sent.returncode == 0, sent.stderr
    said, lookup = sent.stdout.splitlines()
    message_id = said.removeprefix("Sent track with messageId ")
    assert lookup == f"Look it up: .venv/bin/trackd events show {message_id}"
    shown = newcomer.sh(lookup.removeprefix("Look it up: "))
    assert shown.returncode == 0 and shown.stdout.startswith("track 'Button Clicked'"), shown
    for sdk in (segment_sdk, trackd_client):
        result = newcomer.run(sdk)
        assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    counts = eventually(lambda: (r := newcomer.run(look, messageId=message_id)).returncode == 0
                        and re.search(r"Product Purchased +2\b", r.stdout) and r)
    assert re.search(r"Button Clicked +2\b", counts.stdout), counts.stdout  # curl + send
    assert f"{message_id},Button Clicked," in counts.stdout  # the CSV query, plain in a pipe


def _doc_blocks() -> list[Block]:
    return [b for path in DOCS[1:] for b in blocks(path) if b.lang in RUN]


@pytest.fixture(scope="module")
def seeded(newcomer: Newcomer) -> Newcomer:
    """What the docs' examples read on the default setup: an identify (app.users), an
    Order Completed with a type conflict, and an archive file."""
    with httpx.Client(base_url=f"http://127.0.0.1:{newcomer.port}",
                      auth=(newcomer.write_key, ""), timeout=30) as client:
        for path, body in [
            ("/v1/identify", {"userId": "user123", "traits": {"email": "u@example.com"}}),
            ("/v1/track", {"userId": "user123", "event": "Order Completed",
                           "properties": {"revenue": 10}}),
            ("/v1/track", {"userId": "user123", "event": "Order Completed",
                           "properties": {"revenue": "ten"}}),
        ]:
            assert client.post(path, json=body).status_code == 200
    trackd = str(newcomer.copy / ".venv" / "bin" / "trackd")
    eventually(lambda: subprocess.run(
        [trackd, "query", "SELECT count(*) FROM app.order_completed, app.users"],
        cwd=newcomer.copy, capture_output=True, env=newcomer.env).returncode == 0)
    eventually(lambda: list((newcomer.copy / "trackd-data" / "archive").rglob("*.parquet")),
               timeout=30)
    return newcomer


@pytest.mark.parametrize("block", _doc_blocks(), ids=lambda b: b.name)
def test_every_docs_example_runs_as_written(seeded: Newcomer, block: Block) -> None:
    if block.skip:
        pytest.skip(block.skip)
    if block.lang == "toml":  # a configuration example: trackd accepts it as it is
        config = seeded.copy / "example.toml"
        config.write_text(block.text)
        load(config, env={})
        return
    result = seeded.run(block)
    assert result.returncode == 0, f"{block.name}\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    assert '"error"' not in result.stdout, result.stdout


def test_profile_api_errors_have_the_documented_shape_and_request_id(
        newcomer: Newcomer) -> None:
    """docs/warehouse.md: errors are {"error": {"code", "message"}}, every answer has a
    Request-Id, a missing or wrong admin token included."""
    path = "/v1/spaces/any/collections/users/profiles/user_id:nobody/traits"
    with httpx.Client(base_url=f"http://127.0.0.1:{newcomer.port}", timeout=30) as client:
        for auth, status, code in [(None, 401, "authentication_error"),
                                   (("wrong-token", ""), 401, "authentication_error"),
                                   ((newcomer.admin_token, ""), 404, "not_found")]:
            answer = client.get(path, auth=auth)
            assert answer.status_code == status
            assert re.fullmatch(r"[0-9a-f-]{36}", answer.headers["request-id"])
            assert answer.json()["error"]["code"] == code
            assert set(answer.json()) == {"error"}
            assert set(answer.json()["error"]) == {"code", "message"}


def test_only_these_blocks_are_not_run() -> None:
    """Skipping an example is a decision made here, not by a comment alone."""
    skipped: dict[str, int] = {}
    for path in DOCS:
        for block in blocks(path):
            if block.skip is not None and block.lang in RUN and not block.project_file:
                skipped[path.name] = skipped.get(path.name, 0) + 1
    assert skipped == {"benchmarks.md": 8, "client.md": 2, "console.md": 1,
                       "data-quality.md": 2, "destinations.md": 1, "guarantees.md": 1,
                       "scale-out.md": 1, "testing.md": 2, "warehouse.md": 2}
