"""log -> warehouse: the `warehouse` stage loads the log into DuckDB or PostgreSQL in Segment's
schema.

- `store`: the seam (the `Store` protocol) the loader writes and the readers read through;
  `duckstore` (the DuckDB file) and `postgres` (a PostgreSQL database) implement it, and
  `backend` picks one by `[warehouse] url`;
- `loader`: the stage (log consumer `warehouse`, one writer thread, exactly-once batches);
  `jobs`: what other parts run in its thread between two batches;
- `batch`: one load transaction (dedup decisions, rows, bookkeeping);
- `shape`: a message -> its rows (pure); `naming`: go-snakecase; `values`: column types;
- `catalog`: the tables and columns that exist, and the DDL a batch needs;
- `upsert`: users/accounts trait merging; `ledger`: the `_trackd` bookkeeping tables;
- `db`: the file and its connections (one writer, read cursors, read-only offline);
- `query`: read-only SQL; `lookup`: "where is my event"; `identity` and `profiles`: the
  Profile API;
- `erasure`: privacy deletion and retention on either store (the statements; `erase` runs
  them on DuckDB and rewrites the file, `postgres.erase` on PostgreSQL), picked by `backend`.

Only this package imports duckdb, and only `postgres` imports psycopg. `trackd.app` wires the
stage, the query engine, the lookup and the Profile API routes; see docs/warehouse.md.
"""
