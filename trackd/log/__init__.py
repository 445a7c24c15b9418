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

The seam both logs sit behind (`protocol`: LogProducer, LogConsumer, LogSource; what a stage may
rely on on each log): `sqlite` puts the writer and reader above behind it, `jetstream` is the
log on NATS JetStream (`jetstream_consumer`: one durable pull consumer per name). The stages
still use LogWriter/LogReader directly; moving them to the seam is the next step.
"""
