"""The regulations API's contract: Segment's shape, errors, records without ids, the CLI."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, Server
from tests.gateway.helpers import running_server
from tests.privacy.common import ADMIN, CONFIG, RUN, finished, regulate, regulation


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_server(tmp_path_factory.mktemp("regulations") / "data",
                        CONFIG.format(delay=0.2)) as server:
        yield server


@pytest.mark.parametrize(("body", "message"), [
    (b"not json", "Body must be JSON"),
    (b"[]", "Body must be a JSON object"),
    (b'{"subjectType": "USER_ID", "subjectIds": ["a"]}', "regulationType must be one of"),
    (b'{"regulationType": "FORGET", "subjectType": "USER_ID", "subjectIds": ["a"]}',
     "regulationType must be one of SUPPRESS_ONLY, UNSUPPRESS, DELETE_INTERNAL"),
    (b'{"regulationType": "DELETE_ONLY", "subjectType": "EMAIL", "subjectIds": ["a"]}',
     "subjectType must be USER_ID or ANONYMOUS_ID"),
    (b'{"regulationType": "DELETE_ONLY", "subjectType": "USER_ID", "subjectIds": []}',
     "subjectIds must be a non-empty array of strings"),
    (b'{"regulationType": "DELETE_ONLY", "subjectType": "USER_ID", "subjectIds": [7]}',
     "subjectIds must be non-empty strings"),
    (b'{"regulationType": "DELETE_ONLY", "subjectType": "USER_ID", "subjectIds": ["a"], '
     b'"sources": ["nope"]}', "Unknown source: nope"),
])
def test_bad_bodies_get_400_with_the_usual_error_shape(live: Server, body: bytes,
                                                       message: str) -> None:
    answer = httpx.post(live.url + "/api/v1/regulations", content=body, headers=ADMIN,
                        timeout=30)
    assert answer.status_code == 400
    doc = answer.json()
    assert doc["success"] is False and doc["code"] == "invalid_request_error"
    assert doc["error"]["type"] == "invalid_request_error"
    assert doc["error"]["message"].startswith(message) and doc["message"] == doc["error"][
        "message"]


def test_more_than_5000_ids_are_refused(live: Server) -> None:
    answer = httpx.post(live.url + "/api/v1/regulations", headers=ADMIN, timeout=30, json={
        "regulationType": "DELETE_ONLY", "subjectType": "USER_ID",
        "subjectIds": [f"u{n}" for n in range(5001)]})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == (
        "subjectIds holds 5001 ids: at most 5000 a request")


def test_unknown_ids_get_404_and_no_token_401(live: Server) -> None:
    answer = httpx.get(live.url + "/api/v1/regulations/nope", headers=ADMIN, timeout=30)
    assert answer.status_code == 404
    assert answer.json()["error"] == {"type": "not_found",
                                      "message": "No regulation with id 'nope'"}
    assert httpx.get(live.url + "/api/v1/regulations", timeout=30).status_code == 401


def test_records_are_listed_newest_first_and_name_subjects_only_by_hash(live: Server) -> None:
    subject = f"recorded-{RUN}-subject"
    first = regulate(live, "SUPPRESS_ONLY", [subject])
    second = regulate(live, "UNSUPPRESS", [subject])
    third = regulate(live, "DELETE_INTERNAL", [f"{subject}-2"], "ANONYMOUS_ID",
                     sources=["web"])
    for regulation_id in (first, second, third):
        finished(live, regulation_id)
    shown = regulation(live, third)
    assert shown["regulationType"] == "DELETE_INTERNAL"
    assert shown["subjectType"] == "ANONYMOUS_ID" and shown["subjectCount"] == 1
    assert shown["createdAt"] <= shown["finishedAt"]
    assert {s["status"] for s in shown["stores"]} == {"FINISHED"}
    assert [s["name"] for s in regulation(live, first)["stores"]] == ["suppression"]
    listed = httpx.get(live.url + "/api/v1/regulations", headers=ADMIN, timeout=30).json()
    ids = [r["id"] for r in listed["data"]["regulations"]]
    assert ids.index(third) < ids.index(second) < ids.index(first)
    privacy = live.data_dir / "privacy"
    for path in privacy.iterdir():  # the records and the list hold hashes, never the ids
        assert subject.encode() not in path.read_bytes(), path.name
    assert (privacy / "regulations.db").stat().st_mode & 0o077 == 0


def test_the_cli_records_follows_and_lists(live: Server) -> None:
    subject = f"cli-{RUN}-subject"
    done = live.run_cli("privacy", "delete", "--user-id", subject, "--internal-only",
                        "--wait")
    recorded, final = done.stdout.splitlines()
    assert recorded.startswith("Regulation ") and recorded.endswith(
        "(DELETE_INTERNAL, USER_ID) recorded")
    regulation_id = recorded.split()[1]
    assert final.startswith(f"{regulation_id}  DELETE_INTERNAL  USER_ID x1  FINISHED")
    assert "log FINISHED" in final and "warehouse FINISHED" in final
    status = live.run_cli("privacy", "status", regulation_id)
    assert status.stdout.startswith(f"{regulation_id}  DELETE_INTERNAL")
    assert regulation_id in live.run_cli("privacy", "list").stdout.splitlines()[0]
    missing = live.run_cli("privacy", "status", "nope", check=False)
    assert missing.returncode == 1
    assert missing.stderr == "Error: No regulation with id 'nope'\n"
    neither = live.run_cli("privacy", "suppress", check=False)
    assert neither.returncode == 2 and "give at least one --user-id" in neither.stderr


def test_the_cli_without_a_server_says_so_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "trackd", "privacy", "list", "--data-dir",
                             str(tmp_path / "d")], capture_output=True, text=True, cwd=ROOT,
                            timeout=60)
    assert result.returncode == 1
    assert result.stderr.startswith("Error: no trackd server runs on ")
    assert "Traceback" not in result.stderr


