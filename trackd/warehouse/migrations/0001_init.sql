-- trackd's own bookkeeping, next to the source schemas. Never edited once shipped.

CREATE SCHEMA IF NOT EXISTS _trackd;

-- The loader's position in the log: the last offset loaded per shard. Written in the same
-- transaction as the rows, so the rows and the position are always in step.
CREATE TABLE _trackd.offsets (
    shard VARCHAR NOT NULL,
    "offset" BIGINT NOT NULL
);

-- The load ledger: one row per (source, messageId) loaded. `key` is a 63-bit hash of both,
-- indexed for dedup; `tables` lists where the message went. Identifiers feed the Profile API.
CREATE TABLE _trackd.messages (
    key BIGINT PRIMARY KEY,
    source VARCHAR NOT NULL,
    message_id VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    tables VARCHAR[] NOT NULL,
    received_at TIMESTAMP NOT NULL,
    loaded_at TIMESTAMP NOT NULL,
    user_id VARCHAR,
    anonymous_id VARCHAR,
    email VARCHAR
);

-- Messages not loaded because they repeat one already loaded.
CREATE TABLE _trackd.duplicates (
    source VARCHAR NOT NULL,
    message_id VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    received_at TIMESTAMP,
    seen_at TIMESTAMP NOT NULL,
    original_received_at TIMESTAMP,
    original_loaded_at TIMESTAMP,
    shard VARCHAR NOT NULL,
    "offset" BIGINT NOT NULL
);

-- Messages that could not be loaded even alone (the error says why); the loader moved on.
CREATE TABLE _trackd.load_errors (
    source VARCHAR NOT NULL,
    message_id VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    received_at VARCHAR,
    failed_at TIMESTAMP NOT NULL,
    error VARCHAR NOT NULL,
    shard VARCHAR NOT NULL,
    "offset" BIGINT NOT NULL
);

-- Messages as received, for the Profile API: identifies and groups are kept, other calls for
-- the Profile API's 14 days. (shard, offset) is their log order, for ties in received_at.
CREATE TABLE _trackd.events (
    key BIGINT NOT NULL,
    source VARCHAR NOT NULL,
    message_id VARCHAR NOT NULL,
    type VARCHAR NOT NULL,
    received_at TIMESTAMP NOT NULL,
    "timestamp" TIMESTAMP,
    user_id VARCHAR,
    anonymous_id VARCHAR,
    body JSON NOT NULL,
    shard VARCHAR NOT NULL,
    "offset" BIGINT NOT NULL
);
