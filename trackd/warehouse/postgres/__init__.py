"""The PostgreSQL warehouse: `store` (loading, exactly once), `schema` (types, DDL under a lock),
`query` (read-only SQL), `connect` (connections, their one-line errors, read cursors),
`copying` (COPY of Arrow tables), `erase` (privacy deletion and retention).

Only this package imports psycopg; see docs/warehouse.md.
"""
