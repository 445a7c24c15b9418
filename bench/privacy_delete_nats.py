"""Time to delete one user from the NATS JetStream log (the regulation's `log` store on NATS).

Run from the repository root, against a NATS server with JetStream (a stream of its own, made
and deleted here):

    .venv/bin/python bench/privacy_delete_nats.py [--url nats://127.0.0.1:4222] \
        [--messages 100000] [--users 1000]

Publishes `--messages` track calls of `--users` users through `JetStreamLog.append` (trackd's
subjects and headers, 1,000 a call), then times what the regulation does in the log for one
user through `JetStreamErasure`: the widening (linked anonymous ids, one read of the stream)
and the erasure (a read of the stream's accepted, quarantined and violation subjects, and
JetStream's secure delete of each of the user's messages). Prints the times.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid

import nats
import nats.js.errors

from trackd.log.jetstream import JetStreamLog
from trackd.log.jetstream_erase import JetStreamErasure
from trackd.log.records import Entry
from trackd.privacy.subjects import Subjects
from trackd.settings import LogSettings


def user(n: int) -> str:
    return f"bench-user-{n:06d}"


async def run(url: str, messages: int, users: int) -> None:
    stream = f"bench-erase-{uuid.uuid4().hex[:8]}"
    log = JetStreamLog(LogSettings(url=url, stream=stream))
    await log.start()
    nc = await nats.connect(url)
    try:
        started = time.monotonic()
        for first in range(0, messages, 1000):
            await log.append([Entry("web", f"m-{n}", "track", "2026-01-01T00:00:00.000Z",
                                    json.dumps({"userId": user(n % users),
                                                "anonymousId": f"anon-{n % users:06d}",
                                                "event": "Bench", "messageId": f"m-{n}",
                                                "properties": {"n": n}}).encode())
                              for n in range(first, min(first + 1000, messages))])
        print(f"published {messages:,} messages of {users:,} users in "
              f"{time.monotonic() - started:.1f} s")

        async def client() -> nats.aio.client.Client:
            return nc

        erasure = JetStreamErasure(stream, client)
        subjects = Subjects(user_ids={user(7)})
        started = time.monotonic()
        await erasure.widen(subjects)
        widened = time.monotonic() - started
        started = time.monotonic()
        removed = await erasure.erase(subjects)
        erased = time.monotonic() - started
        print("| step | time |\n|---|---|")
        print(f"| widen: the user's linked anonymous ids ({len(subjects.anonymous_ids)}) | "
              f"{widened:.2f} s |")
        print(f"| erase: read the stream, secure delete of their {removed} messages | "
              f"{erased:.2f} s |")
        print(f"| total | {widened + erased:.2f} s |")
    finally:
        await log.close()
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await nc.jetstream().delete_stream(stream)
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="nats://127.0.0.1:4222")
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    asyncio.run(run(args.url, args.messages, args.users))


if __name__ == "__main__":
    main()
