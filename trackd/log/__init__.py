"""The durable log: the only channel between pipeline stages.

Interface (what later stages may rely on):

- `LogWriter.append(entries, quarantined)` (async): returns only once every entry is committed
  and fsync'd (SQLite WAL, synchronous=FULL). Concurrent callers share one commit.
- `LogReader.read(consumer, limit)`: records after the consumer's committed position, in order
  per shard (one shard file per gateway worker).
- `LogReader.commit(consumer, records)`: the consumer's position advances past these records.
  Call it only after the consumer's own output is durable.
- `LogReader.trim(keep_after)`: delete records every registered consumer has passed.

Positions are per shard: a `Position` maps shard name to the last offset consumed.
"""
