"""Schema limits: columns per table and event tables per source; what goes beyond is kept in
`_overflow` and counted, and wide loads are typed like narrow ones."""

from __future__ import annotations

import json
from collections.abc import Callable

from tests.warehouse.conftest import Log, Warehouse, enriched

MakeWarehouse = Callable[..., Warehouse]


def _overflow_metric(w: Warehouse, limit: str) -> float:
    values = w.metrics.snapshot()["trackd_warehouse_overflow_total"]["values"]
    return float(sum(v for labels, v in values if labels[-1] == limit))


def test_properties_beyond_the_column_limit_are_kept_in_overflow(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([enriched("track", userId="u1", event="Wide",
                        properties={f"p{j:03d}": j for j in range(40)}),
               enriched("track", userId="u2", event="Wide",
                        properties={"p000": 7, "late": "x", "nested": {"a": True}})])
    w = make_warehouse(max_columns_per_table=30)
    w.loader.load_available()
    columns = w.columns("web", "wide")
    assert len(columns) == 31 and columns["_overflow"] == "JSON"  # 30 + _overflow
    kept = sorted(c for c in columns if c.startswith("p"))
    beyond = [f"p{j:03d}" for j in range(40) if f"p{j:03d}" not in kept]
    assert beyond, kept
    rows = w.rows("SELECT user_id, _overflow FROM web.wide ORDER BY user_id")
    first = json.loads(rows[0][1])
    assert first == {name: int(name[1:]) for name in beyond}
    assert json.loads(rows[1][1]) == {"late": "x", "nested_a": True}
    # queryable as JSON, next to the columns
    assert w.rows(f"SELECT p000, (_overflow->>'{beyond[0]}')::INT FROM web.wide "
                  "WHERE user_id = 'u1'") == [(0, int(beyond[0][1:]))]
    assert _overflow_metric(w, "columns") == 2
    assert w.metric("trackd_warehouse_load_errors_total") == 0


def test_a_full_pages_table_keeps_a_later_batchs_new_properties_in_overflow(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    """The limit holds across batches: a table already at it gets no column more."""
    log.write([enriched("page", userId="u1", properties={f"p{j:03d}": j for j in range(40)})])
    w = make_warehouse(max_columns_per_table=40)
    w.loader.load_available()
    before = w.columns("web", "pages")
    assert len(before) == 41 and "_overflow" in before  # 40 + _overflow
    log.write([enriched("page", userId="u2", properties={"late": "x"})])
    w.loader.load_available()
    assert w.columns("web", "pages") == before
    assert w.rows("SELECT _overflow FROM web.pages WHERE user_id = 'u2'") == [('{"late":"x"}',)]


def test_events_beyond_the_table_limit_stay_in_tracks_with_their_properties(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([enriched("track", userId="u", event=f"Event {i}", properties={"n": i})
               for i in range(5)])
    w = make_warehouse(max_tables_per_source=3)
    w.loader.load_available()
    tables = {r[0] for r in w.rows("SELECT table_name FROM information_schema.tables "
                                   "WHERE table_schema = 'web'")}
    assert tables == {"tracks", "event_0", "event_1", "event_2"}
    rows = w.rows("SELECT event, _overflow->'properties'->>'n' FROM web.tracks ORDER BY event")
    assert rows == [("event_0", None), ("event_1", None), ("event_2", None),
                    ("event_3", "3"), ("event_4", "4")]
    assert _overflow_metric(w, "tables") == 2
    # an event table that exists keeps loading; a new one still goes to tracks
    log.write([enriched("track", userId="u", event="Event 1", properties={"n": 10}),
               enriched("track", userId="u", event="Event 9", properties={"n": 9})])
    w.loader.load_available()
    assert w.rows("SELECT count(*) FROM web.event_1") == [(2,)]
    assert w.rows("SELECT _overflow->'properties'->>'n' FROM web.tracks "
                  "WHERE event = 'event_9'") == [("9",)]
    assert _overflow_metric(w, "tables") == 3


def test_a_wide_load_types_values_and_conflicts_like_a_narrow_one(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    names = [f"prop{j}" for j in range(100)]  # past plan width: typed the long way
    log.write([enriched("track", userId="a", event="Many",
                        properties={**{n: j for j, n in enumerate(names)},
                                    "when": "2024-05-01T10:00:00Z", "flag": True,
                                    "ratio": 0.5, "text": "t"}),
               enriched("track", userId="b", event="Many",
                        properties={"prop1": "not a number", "prop2": "42",
                                    "flag": "false", "when": 3})])
    w = make_warehouse()
    w.loader.load_available()
    columns = w.columns("web", "many")
    assert (columns["prop1"], columns["when"], columns["flag"], columns["ratio"],
            columns["text"]) == ("BIGINT", "TIMESTAMP", "BOOLEAN", "DOUBLE", "VARCHAR")
    a, b = w.dicts("SELECT * FROM web.many ORDER BY user_id")
    assert a["prop99"] == 99 and a["flag"] is True and str(a["when"]) == "2024-05-01 10:00:00"
    assert a["_type_conflicts"] is None and a["event"] == "many" and a["context_ip"]
    assert (b["prop1"], b["prop2"], b["flag"], b["when"]) == (None, 42, False, None)
    assert json.loads(b["_type_conflicts"]) == {"prop1": "not a number", "when": "3"}
    assert w.metric("trackd_warehouse_type_conflicts_total") == 1


def test_traits_beyond_the_column_limit_merge_in_users_overflow(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([enriched("identify", userId="u", traits={f"t{j:02d}": j for j in range(20)})])
    w = make_warehouse(max_columns_per_table=12)
    w.loader.load_available()
    log.write([enriched("identify", userId="u", traits={"t19": "changed", "t18": None})])
    w.loader.load_available()
    assert len(w.columns("web", "users")) == 13
    (overflow,), = w.rows("SELECT _overflow FROM web.users WHERE id = 'u'")
    kept = json.loads(overflow)
    assert kept == {**{f"t{j:02d}": j for j in range(8, 18)}, "t19": "changed"}


def test_many_new_event_tables_get_their_column_types_from_one_query(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    values: list[object] = [1, 1.5, True, "2024-05-01T10:00:00Z", "text", [1, 2]]
    log.write([enriched("track", userId="u", event=f"Kind {i}",
                        properties={"v": values[i % len(values)], "later": None})
               for i in range(12)]
              + [enriched("track", userId="u", event="Kind 0",
                          properties={"v": "x", "later": 5}),
                 # other tables with new columns in the same batch: typed apart
                 enriched("page", userId="u", properties={"pp": 5}),
                 enriched("identify", userId="u", traits={"tt": 1.5})])
    w = make_warehouse()
    w.loader.load_available()
    assert w.rows("SELECT pp FROM web.pages") == [(5,)]
    assert w.rows("SELECT tt FROM web.identifies") == [(1.5,)]
    expected = ["BIGINT", "DOUBLE", "BOOLEAN", "TIMESTAMP", "VARCHAR", "VARCHAR"]
    for i in range(12):
        assert w.columns("web", f"kind_{i}")["v"] == expected[i % len(expected)]
    assert w.columns("web", "kind_0")["later"] == "BIGINT"
    assert w.rows("SELECT v, later, _type_conflicts->>'v' FROM web.kind_0 ORDER BY later") == [
        (None, 5, "x"), (1, None, None)]
