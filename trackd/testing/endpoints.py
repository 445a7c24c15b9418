"""The test endpoints of `trackd serve --ephemeral` (they exist in no other mode).

- `GET /api/v1/test/messages?type=&event=&user_id=&status=`: every message that arrived, in
  order of receipt, read from the log (so a message is there as soon as the SDK got its 200):
  `{"messages": [{"status": "accepted" | "refused", "messageId", "type", "event", "userId",
  "receivedAt", "reason" (refused only), "violations": [...], "message": {...}}]}`.
  `message` is the message as stored (accepted: enriched, omitted fields gone) or as sent
  (refused). `status` is `accepted` or `refused`; the other filters match the message's fields.
- `POST /api/v1/test/reset`: forget everything that arrived (the log's messages, refusals and
  violations), for the next test.

No admin token: an ephemeral server holds nothing worth guarding and listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from trackd.log import shard
from trackd.log.reader import VIOLATION_COLUMNS, LogReader

MESSAGES, RESET = "/api/v1/test/messages", "/api/v1/test/reset"
TEST_PATHS = (MESSAGES, RESET)
LIMIT = 100_000
_FIELDS = VIOLATION_COLUMNS.replace(" ", "").split(",")


def _json(content: Any, status: int = 200) -> Response:
    return Response(msgspec.json.encode(content), status_code=status,
                    media_type="application/json")


def arrived(reader: LogReader) -> list[dict[str, Any]]:
    """Every message in the log, accepted or refused, with its violations, oldest first."""
    found: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for row in reader.read_violations({}, LIMIT):
        violation = dict(zip(_FIELDS, row[2:], strict=True))
        found.setdefault((violation["source"], violation["message_id"]), []).append({
            key: violation[key] for key in ("violation", "path", "rule", "message",
                                            "plan_version", "action")})
    out = []
    for record in reader.read("test", LIMIT, position={}):
        message = json.loads(record.body)
        out.append(_item("accepted", record.source, record.message_id, record.received_at,
                         message, None, found))
    for kept in reader.quarantined(limit=LIMIT):
        try:
            message = json.loads(str(kept["body"]))
        except ValueError:
            message = str(kept["body"])
        message_id = kept["messageId"]
        out.append(_item("refused", str(kept["source"]),
                         message_id if isinstance(message_id, str) else None,
                         str(kept["receivedAt"]), message, str(kept["reason"]), found))
    out.sort(key=lambda item: str(item["receivedAt"]))
    return out


def _item(status: str, source: str, message_id: str | None, received_at: str, message: Any,
          reason: str | None, found: dict[tuple[str, str | None], list[dict[str, Any]]]
          ) -> dict[str, Any]:
    fields = message if isinstance(message, dict) else {}
    item = {"status": status, "source": source, "messageId": message_id,
            "type": fields.get("type"), "event": fields.get("event"),
            "userId": fields.get("userId"), "receivedAt": received_at,
            "violations": found.get((source, message_id), []), "message": message}
    if reason is not None:
        item["reason"] = reason
    return item


def reset(reader: LogReader) -> None:
    """Delete what every shard holds (offsets stay valid: sequence numbers never go back)."""
    for name in reader.shards():
        conn = shard.connect(shard.shard_path(reader.log_dir, name), write=False)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for table in ("frames", "quarantine", "violations"):
                conn.execute(f"DELETE FROM {table}")
            conn.execute("COMMIT")
        finally:
            conn.close()


def test_routes(reader: LogReader) -> list[Route]:
    async def messages(request: Request) -> Response:
        wanted = {key: request.query_params.get(param) for key, param in (
            ("status", "status"), ("type", "type"), ("event", "event"), ("userId", "user_id"))}
        items = await asyncio.to_thread(arrived, reader)
        return _json({"messages": [item for item in items if all(
            value is None or item[key] == value for key, value in wanted.items())]})

    async def clear(request: Request) -> Response:
        await asyncio.to_thread(reset, reader)
        return _json({"success": True})

    return [Route(MESSAGES, messages, methods=["GET"]), Route(RESET, clear, methods=["POST"])]
