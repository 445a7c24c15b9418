""""Where is my event": one answer assembled from the log and every stage that knows the id."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from trackd.log.protocol import LogSource, Quarantined
from trackd.log.reader import LogReader
from trackd.log.records import Record
from trackd.types import Lookup


def where_is(message_id: str, reader: LogReader, lookups: Mapping[str, Lookup]
             ) -> dict[str, Any]:
    """Everything known about `message_id`; `found` is False when nothing is."""
    return answer_of(message_id, reader.find(message_id),
                     reader.quarantined(message_id=message_id, limit=20), lookups)


async def where_is_live(message_id: str, source: LogSource, lookups: Mapping[str, Lookup]
                        ) -> dict[str, Any]:
    """`where_is` in the pipeline, whichever log it runs on."""
    in_log = await source.find(message_id)
    quarantined = await source.quarantined(message_id=message_id, limit=20)
    return await asyncio.to_thread(answer_of, message_id, in_log, quarantined, lookups)


def answer_of(message_id: str, in_log: Sequence[Record], quarantined: Sequence[Quarantined],
              lookups: Mapping[str, Lookup]) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "messageId": message_id,
        "accepted": [{"source": r.source, "type": r.type, "receivedAt": r.received_at,
                      "log": {"shard": r.shard, "offset": r.offset}} for r in in_log],
        "quarantined": [{"source": q["source"], "receivedAt": q["receivedAt"],
                         "reason": q["reason"], "batchIndex": q["batchIndex"]}
                        for q in quarantined],
    }
    if in_log:
        answer["message"] = msgspec.json.decode(in_log[0].body)
    for name, lookup in lookups.items():
        answer[name] = lookup.lookup(message_id)
    stage_found = any(bool(answer[name].get("found")) for name in lookups)
    answer["found"] = bool(in_log or quarantined or stage_found)
    if stage_found and not in_log:
        for name in lookups:
            for accepted in answer[name].get("accepted", []):
                answer["accepted"].append(accepted)
    return answer
