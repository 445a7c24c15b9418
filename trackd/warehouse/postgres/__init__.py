"""The PostgreSQL warehouse: `store` (loading, exactly once), `schema` (types, DDL under a lock),
`query` (read-only SQL), `connect` (connections and their one-line errors).

Only this package imports psycopg; see docs/warehouse.md.
"""
