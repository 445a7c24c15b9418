"""The SQL side of typing: DuckDB macros that turn a JSON value into a column's type.

The loader moves rows from JSON to columns inside DuckDB (vectorised, outside the GIL). These
macros are the SQL twins of `values.convert` and `identity.identifiers`, with the same rules:

- `trk_<type>(t, s)`: a JSON value of json_type `t` and text `s` (a string as itself, anything
  else as its JSON, as `json_extract_string` gives it) as that column type, or NULL when it does
  not fit (`trk_varchar` takes JSON objects as their text only when asked); `_type_conflicts`
  keeps `s`;
- `trk_timestamp_text(s)`: an ISO-8601 string as a naive UTC timestamp, whatever the session's
  time zone;
- `trk_id(t, s)`, `trk_email_at(t, s)`, `trk_email(e)`: the identifiers of `identity`,
  blocked values removed (`identifiers` selects them).

They are TEMP macros of the writer connection, created by `install` when the loader opens the
database.
"""

from __future__ import annotations

import duckdb

from trackd.warehouse.identity import BLOCKED_PATTERN
from trackd.warehouse.values import INTEGER_PATTERN, ISO_PATTERN, NUMBER_PATTERN, ColumnType

_ZONE = (r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"
         r"(Z|z|[+-]\d{2}(?::?\d{2})?)?$")
_SPACE = "' ' || chr(9) || chr(10) || chr(11) || chr(12) || chr(13)"


def literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def pointer(*keys: str) -> str:
    """A JSON Pointer (RFC 6901) to a nested key, as a SQL literal: any key is safe."""
    return literal("".join("/" + k.replace("~", "~0").replace("/", "~1") for k in keys))


# The conversion macros take a JSON value's json_type `t` and its text `s` (the string for a
# string, the JSON for anything else: `json_extract_string`), read once per column a level
# below, which keeps the expressions (and planning) small and parses no value again.
MACROS = [
    "CREATE OR REPLACE TEMP MACRO trk_varchar(t, s, objects) AS CASE "
    "WHEN t = 'OBJECT' AND NOT objects THEN NULL WHEN t <> 'NULL' THEN s END",
    "CREATE OR REPLACE TEMP MACRO trk_bigint(t, s) AS CASE "
    "WHEN t = 'BIGINT' OR t = 'UBIGINT' THEN TRY_CAST(s AS BIGINT) "
    "WHEN t = 'DOUBLE' THEN CASE WHEN TRY_CAST(s AS DOUBLE) = trunc(TRY_CAST(s AS DOUBLE)) "
    "THEN TRY_CAST(TRY_CAST(s AS DOUBLE) AS BIGINT) END "
    f"WHEN t = 'VARCHAR' AND regexp_full_match(s, {literal(INTEGER_PATTERN)}) "
    "THEN TRY_CAST(s AS BIGINT) END",
    "CREATE OR REPLACE TEMP MACRO trk_finite(x) AS CASE WHEN isfinite(x) THEN x END",
    "CREATE OR REPLACE TEMP MACRO trk_double(t, s) AS CASE "
    "WHEN t = 'BIGINT' OR t = 'UBIGINT' OR t = 'DOUBLE' THEN trk_finite(TRY_CAST(s AS DOUBLE)) "
    f"WHEN t = 'VARCHAR' AND regexp_full_match(s, {literal(NUMBER_PATTERN)}) "
    "THEN trk_finite(TRY_CAST(s AS DOUBLE)) END",
    "CREATE OR REPLACE TEMP MACRO trk_boolean(t, s) AS CASE "
    "WHEN t = 'BOOLEAN' THEN TRY_CAST(s AS BOOLEAN) "
    "WHEN t = 'VARCHAR' AND lower(s) IN ('true', 'false') THEN lower(s) = 'true' END",
    "CREATE OR REPLACE TEMP MACRO trk_timestamp(t, s) AS "
    "CASE WHEN t = 'VARCHAR' THEN trk_timestamp_text(s) END",
    "CREATE OR REPLACE TEMP MACRO trk_usable(x) AS "
    f"x IS NOT NULL AND NOT regexp_full_match(x, {literal(BLOCKED_PATTERN)}, 'i')",
    "CREATE OR REPLACE TEMP MACRO trk_id(t, s) AS "
    "CASE WHEN t = 'VARCHAR' AND trk_usable(s) THEN s END",
    "CREATE OR REPLACE TEMP MACRO trk_email_at(t, s) AS "
    f"CASE WHEN t = 'VARCHAR' AND contains(s, '@') THEN lower(trim(s, {_SPACE})) END",
    "CREATE OR REPLACE TEMP MACRO trk_email(e) AS CASE WHEN trk_usable(e) THEN e END",
]
_ISO_GATE = f"length(s) <= 40 AND regexp_full_match(s, {literal(ISO_PATTERN)})"
# DuckDB's own TIMESTAMPTZ parsing applies the offset; cast to TIMESTAMP it gives UTC unless
# the ICU extension has set another session time zone. `install` checks, and otherwise uses
# the offset arithmetic below (slower to plan, same result).
_TIMESTAMP_FAST = ("CREATE OR REPLACE TEMP MACRO trk_timestamp_text(s) AS CASE "
                   f"WHEN {_ISO_GATE} THEN TRY_CAST(TRY_CAST(s AS TIMESTAMPTZ) AS TIMESTAMP) END")
_TIMESTAMP_PORTABLE = [
    f"CREATE OR REPLACE TEMP MACRO trk_zone(s) AS regexp_extract(s, {literal(_ZONE)}, 1)",
    "CREATE OR REPLACE TEMP MACRO trk_offset(z) AS CASE WHEN z IN ('', 'Z', 'z') THEN 0 ELSE "
    "(CASE WHEN left(z, 1) = '-' THEN -1 ELSE 1 END) * (TRY_CAST(substr(z, 2, 2) AS INTEGER) "
    "* 60 + CASE WHEN length(replace(z, ':', '')) = 5 "
    "THEN TRY_CAST(substr(replace(z, ':', ''), 4, 2) AS INTEGER) ELSE 0 END) END",
    f"CREATE OR REPLACE TEMP MACRO trk_timestamp_text(s) AS CASE WHEN {_ISO_GATE} "
    "THEN TRY_CAST(left(s, length(s) - length(trk_zone(s))) AS TIMESTAMP) "
    "- to_minutes(trk_offset(trk_zone(s))) END",
]
_UTC_CHECK = ("SELECT trk_timestamp_text('2024-01-01T10:00:00+02:00') = TIMESTAMP "
              "'2024-01-01 08:00:00' AND trk_timestamp_text('2024-01-01 10:00') = TIMESTAMP "
              "'2024-01-01 10:00:00' AND trk_timestamp_text('2024-01-01') = TIMESTAMP "
              "'2024-01-01 00:00:00'")


IDENTIFIER_PATHS = (("userId",), ("anonymousId",), ("traits", "email"),
                    ("context", "traits", "email"), ("properties", "email"))


def identifiers(refs: list[tuple[str, str]]) -> str:
    """SQL: (user_id, anonymous_id, email) with `identity.identifiers`' rules, from the SQL of
    the json_type and text of each of `IDENTIFIER_PATHS` (in that order)."""
    (t_user, s_user), (t_anonymous, s_anonymous), *emails = refs
    found = ", ".join(f"trk_email_at({t}, {s})" for t, s in emails)
    return (f"trk_id({t_user}, {s_user}) AS user_id, "
            f"trk_id({t_anonymous}, {s_anonymous}) AS anonymous_id, "
            f"trk_email(coalesce({found})) AS email")


def install(con: duckdb.DuckDBPyConnection) -> None:
    """Create the macros on `con` (the writer connection)."""
    con.execute(_TIMESTAMP_FAST)
    if not con.execute(_UTC_CHECK).fetchall()[0][0]:
        for statement in _TIMESTAMP_PORTABLE:
            con.execute(statement)
    for statement in MACROS:
        con.execute(statement)


def convert(t: str, s: str, column_type: str, *, objects: bool = False) -> str:
    """SQL: a JSON value (its json_type `t`, its text `s`) as `column_type`, NULL when it does
    not fit."""
    if column_type in (ColumnType.VARCHAR, ColumnType.JSON):
        return f"trk_varchar({t}, {s}, {'true' if objects else 'false'})"
    if column_type == ColumnType.BIGINT:
        return f"trk_bigint({t}, {s})"
    if column_type == ColumnType.DOUBLE:
        return f"trk_double({t}, {s})"
    if column_type == ColumnType.BOOLEAN:
        return f"trk_boolean({t}, {s})"
    if column_type == ColumnType.TIMESTAMP:
        return f"trk_timestamp({t}, {s})"
    return "NULL"  # a type trackd does not create (changed by hand): the value conflicts


def present(t: str, *, objects: bool = False) -> str:
    """SQL: whether a JSON value of json_type `t` is a value for its column (not missing, not
    null, not an object unless objects count)."""
    kinds = "'NULL'" if objects else "'NULL', 'OBJECT'"
    return f"coalesce({t} NOT IN ({kinds}), false)"
