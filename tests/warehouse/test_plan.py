"""Columns from JSON structures (pure), and the rules they carry, checked on a real load."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.warehouse.conftest import Log, Warehouse, enriched
from trackd.log.reader import LogReader
from trackd.observability import Registry
from trackd.settings import WarehouseSettings
from trackd.warehouse import batch
from trackd.warehouse.db import Database
from trackd.warehouse.identity import identifiers
from trackd.warehouse.loader import WarehouseLoader
from trackd.warehouse.plan import MAX_DEPTH, Leaf, Mixed, merge, shared_load, walk

MakeWarehouse = Callable[..., Warehouse]


def test_structures_merge_by_key_and_objects_clash_with_scalars() -> None:
    assert merge(None, {"a": "VARCHAR"}) == {"a": "VARCHAR"}
    assert merge({"a": "VARCHAR"}, {"b": "BIGINT"}) == {"a": "VARCHAR", "b": "BIGINT"}
    assert merge({"a": {"x": "BIGINT"}}, {"a": {"y": "DOUBLE"}}) == {
        "a": {"x": "BIGINT", "y": "DOUBLE"}}
    assert merge({"a": "VARCHAR"}, {"a": {"x": "BIGINT"}}) == {"a": "JSON"}
    assert merge({"a": "VARCHAR"}, {"a": "BIGINT"}) == {"a": "SCALAR"}
    assert merge({"a": "NULL"}, {"a": "BIGINT"}) == {"a": "BIGINT"}


def test_walk_flattens_names_and_stops_at_the_depth_limit() -> None:
    leaves: list[Leaf] = []
    mixed: list[Mixed] = []
    deep: Any = "BIGINT"
    for _ in range(MAX_DEPTH + 2):
        deep = {"k": deep}
    walk({"productInfo": {"SKU": "VARCHAR"}, "tags": ["VARCHAR"], "gone": "NULL",
          "$$": "VARCHAR", "either": "JSON", "deep": deep}, ("properties",), "", 1,
         leaves, mixed)
    names = {leaf.name: leaf for leaf in leaves}
    assert names["product_info_sku"].keys == ("properties", "productInfo", "SKU")
    assert "tags" in names and "gone" not in names
    assert names["either"].objects is False
    assert [m.name for m in mixed] == ["either"]
    capped = names["deep" + "_k" * (MAX_DEPTH - 1)]
    assert capped.objects is True


def test_reserved_names_and_the_call_columns_on_a_real_load(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([
        enriched("track", messageId="t1", userId="u", event="Order Completed",
                 properties={"id": "p1", "event": "x", "user_id": "spoof",
                             "context": {"ip": "6.6.6.6"}, "2fa": True, "$$$": 1,
                             "nested": {"deep": {"er": [1, 2]}}}),
        enriched("track", messageId="t2", userId="u", event="Users"),
        enriched("page", messageId="p1", anonymousId="a", name="Home", category="Docs",
                 properties={"name": "Home", "category": "Other", "title": "T"}),
        enriched("screen", messageId="s1", anonymousId="a", properties={"name": "Main"}),
        enriched("identify", messageId="i1", userId="u", traits={"id": 7, "email": "a@b.c"}),
    ])
    w = make_warehouse()
    w.loader.load_available()
    (row,) = w.dicts("SELECT * FROM web.order_completed")
    assert (row["id"], row["_id"]) == ("t1", "p1")
    assert (row["event"], row["_event"]) == ("order_completed", "x")
    assert (row["user_id"], row["_user_id"]) == ("u", "spoof")
    assert (row["context_ip"], row["_context_ip"]) == ("10.0.0.1", "6.6.6.6")
    assert row["_2fa"] is True and row["nested_deep_er"] == "[1,2]"
    assert w.rows("SELECT id, event, event_text FROM web._users") == [("t2", "_users", "Users")]
    assert w.rows("SELECT name, category, _category, title FROM web.pages") == [
        ("Home", "Docs", "Other", "T")]
    assert "_name" not in w.columns("web", "pages")
    assert w.rows("SELECT name FROM web.screens") == [("Main",)]
    assert w.rows("SELECT id, _id, email FROM web.identifies") == [("i1", 7, "a@b.c")]
    assert w.rows("SELECT id, _id FROM web.users") == [("u", 7)]


def test_tracks_get_the_context_of_every_event_and_no_properties_aliases_none(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    """The tracks table's columns: the contexts of all the batch's events (each event its
    own group), never their properties; an alias's properties go nowhere."""
    app = {"ip": "10.0.0.1", "app": {"build": "7"}}
    log.write([enriched("track", messageId="a", userId="u", event="A", context=app,
                        properties={"p": 1}),
               enriched("track", messageId="b", userId="u", event="B", properties={"q": 2}),
               enriched("alias", messageId="al", userId="u", previousId="v",
                        properties={"x": 1})])
    w = make_warehouse()
    assert w.loader.load_available() == 3
    assert w.rows("SELECT id, context_app_build FROM web.tracks ORDER BY id") == [
        ("a", "7"), ("b", None)]
    assert not {"p", "q"} & set(w.columns("web", "tracks"))
    assert w.rows("SELECT id, previous_id FROM web.aliases") == [("al", "v")]
    assert "x" not in w.columns("web", "aliases")


def test_two_event_names_of_one_table_in_one_batch_bring_both_their_properties(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([enriched("track", messageId="m1", userId="u", event="Signed Up",
                        properties={"a": 1}),
               enriched("track", messageId="m2", userId="u", event="signed_up",
                        properties={"b": "x"})])
    w = make_warehouse()
    assert w.loader.load_available() == 2
    assert w.rows("SELECT id, event_text, a, b FROM web.signed_up ORDER BY id") == [
        ("m1", "Signed Up", 1, None), ("m2", "signed_up", None, "x")]


def test_a_new_pages_table_keeps_its_own_columns_text_whatever_the_first_value(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([enriched("page", userId="u", name="2024-05-01T10:00:00Z")])
    w = make_warehouse()
    assert w.loader.load_available() == 1
    assert w.columns("web", "pages")["name"] == "VARCHAR"
    assert w.rows("SELECT name FROM web.pages") == [("2024-05-01T10:00:00Z",)]


def test_a_new_wide_screens_table_types_its_kept_name_and_its_many_properties(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    """Over 64 new columns are typed the long way; the screen's `_name` (its property `name`
    kept beside the call's) is typed apart, in the same load."""
    log.write([enriched("screen", userId="u", name="Main",
                        properties={"name": "Prop", **{f"p{j}": j for j in range(70)}})])
    w = make_warehouse()
    assert w.loader.load_available() == 1
    assert w.rows("SELECT name, _name, p0, p69 FROM web.screens") == [("Main", "Prop", 0, 69)]


def test_a_key_that_is_an_object_here_and_a_scalar_there_fills_both(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([
        enriched("track", userId="u", event="Mixed", properties={"size": "large", "n": 1}),
        enriched("track", userId="u", event="Mixed",
                 properties={"size": {"w": 2, "h": {"v": 3}}, "n": "two"}),
    ])
    w = make_warehouse()
    w.loader.load_available()
    assert w.rows("SELECT size, size_w, size_h_v, n, _type_conflicts FROM web.mixed "
                  "ORDER BY size NULLS LAST") == [
        ("large", None, None, 1, None), (None, 2, 3, None, '{"n":"two"}')]
    # in one transaction, not by splitting a failing batch down to single messages
    assert w.metric("trackd_warehouse_batch_failures_total") == 0


def test_objects_under_a_key_of_mixed_types_flatten_as_under_a_plain_key(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    """The same deep object under "d" (always an object) and under "m" (a number, an object,
    and an object whose "k" is text here and an object there): the same columns, to the same
    depth limit."""
    deep: Any = "end"
    for _ in range(MAX_DEPTH + 1):
        deep = {"k": deep}
    log.write([enriched("track", messageId=message_id, userId="u", event="Mixed Deep",
                        properties=properties)
               for message_id, properties in (("a", {"m": 1, "d": deep}), ("b", {"m": deep}),
                                              ("c", {"m": {"k": "flat"}}))])
    w = make_warehouse()
    assert w.loader.load_available() == 3
    columns = w.columns("web", "mixed_deep")
    plain = {name[2:] for name in columns if name.startswith("d_")}
    mixed = {name[2:] for name in columns if name.startswith("m_")}
    assert plain == {"k" + "_k" * (MAX_DEPTH - 2)}  # capped: the rest kept as JSON text
    assert mixed == plain | {"k"}
    capped = "_k" + "_k" * (MAX_DEPTH - 2)
    a, b, c = w.rows(f"SELECT id, m, m_k, m{capped}, d{capped} FROM web.mixed_deep ORDER BY id")
    assert (a[:4], b[:3], c) == (("a", 1, None, None), ("b", None, None),
                                 ("c", None, "flat", None, None))
    assert b[3] == a[4] == '{"k":{"k":"end"}}'


def test_the_ledger_identifiers_match_the_python_rules(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    cases: list[dict[str, Any]] = [
        {"userId": "ann", "anonymousId": "a-1", "traits": {"email": " Ann@X.test "}},
        {"userId": "null", "anonymousId": "0000-0", "traits": {"email": "nope"}},
        {"anonymousId": "a-2", "context": {"traits": {"email": "ctx@x.test"}}},
        {"userId": "u", "traits": {"email": 5}, "context": {"traits": {"email": "b@x"}}},
        {"userId": "Anonymous", "anonymousId": "-1"},
    ]
    messages = [enriched("identify", **case) for case in cases]
    messages.append(enriched("track", userId="t", event="E",
                             properties={"email": "P@x.test"}))
    log.write(messages)
    w = make_warehouse()
    w.loader.load_available()
    ledger = {r[0]: r[1:] for r in w.rows(
        "SELECT message_id, user_id, anonymous_id, email FROM _trackd.messages")}
    for message in messages:
        body = json.loads(json.dumps(message))
        assert ledger[message["messageId"]] == identifiers(body), message


def test_hostile_keys_values_and_nesting_load_without_errors(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(300):
        deep = {"k": deep}
    weird = {"it's": 1, 'quo"te': 2, "back\\slash": 3, "a/b": 4, "t~ilde": 5, "$dollar": 6,
             "dot.ted": 7, "emoji😀": 8, "nul\u0000key": 9, "x" * 255: 10, "": 11,
             "big": 2**64, "huge": 10**30, "neg": -0.0, "s": "nul\u0000in"}
    log.write([enriched("track", userId="u", event="Weird", properties=weird,
                        context={"deep": deep, "ip": "1.1.1.1"}),
               enriched("track", userId="u", event="x'; DROP TABLE web.tracks; --",
                        properties={"ok": 1}),
               enriched("identify", userId="it's me", traits=weird)])
    w = make_warehouse()
    assert w.loader.load_available() == 3
    assert w.rows("SELECT count(*) FROM _trackd.load_errors") == [(0,)]
    (row,) = w.dicts("SELECT * FROM web.weird")
    assert (row["it_s"], row["quo_te"], row["a_b"], row["t_ilde"], row["dollar"]) == (
        1, 2, 4, 5, 6)
    assert (row["big"], row["huge"], row["s"]) == (2.0**64, 1e30, "nul\u0000in")
    assert row["context_deep" + "_k" * (9)].startswith('{"k":')
    assert w.rows("SELECT count(*) FROM web.tracks") == [(2,)]
    assert w.rows("SELECT ok FROM web.x_drop_table_web_tracks") == [(1,)]
    assert w.rows("SELECT id, it_s FROM web.users") == [("it's me", 1)]


def test_tracks_and_event_tables_load_alike_in_one_shared_pass_or_table_by_table(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    narrow = [enriched("track", userId="u", event=event, properties=properties)
              for event, properties in [
                  ("Paid", {"amount": 10, "note": "first", "fooBar": 1, "foo_bar": 2}),
                  ("Paid", {"amount": "lots", "note": 5, "tags": [1], "at": "2024-05-01"}),
                  ("Refunded", {"amount": 7.0, "note": None, "nested": {"a": {"b": 1}}}),
                  ("Refunded", {"amount": 7.5, "at": "soon", "nested": "flat"}),
                  ("", {"amount": 1})]]
    wide = [enriched("track", userId="u", event=f"E{i}",
                     properties={f"p{i}_{k}": k for k in range(6)}) for i in range(4)]
    wide.append(enriched("track", userId="u", event="Paid", properties={"amount": "x"}))
    used: list[bool] = []

    def spy(loads: list[Any]) -> list[str] | None:
        statements = shared_load(loads)
        used.append(statements is not None)
        return statements

    def load(name: str) -> dict[str, list[tuple[Any, ...]]]:
        log = Log(tmp_path / name / "log")
        log.write(narrow)
        log.write(wide, "gw1")
        database = Database(tmp_path / name / "warehouse.duckdb")
        loader = WarehouseLoader(WarehouseSettings(batch_rows=len(narrow)), database,
                                 LogReader(tmp_path / name / "log"), Registry(),
                                 clock=lambda: datetime(2024, 5, 2))
        loader.open()
        loader.load_available()
        out: dict[str, list[tuple[Any, ...]]] = {}
        with database.reading() as cur:
            for schema, table in cur.execute(
                    "SELECT table_schema, table_name FROM information_schema.tables "
                    "WHERE table_schema = 'web' ORDER BY ALL").fetchall():
                out[table] = cur.execute(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE "
                    "table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                    [schema, table]).fetchall()
                out[table] += sorted(cur.execute(f'SELECT * FROM web."{table}"').fetchall(),
                                     key=repr)
        database.close()
        return out

    monkeypatch.setattr(batch, "shared_load", spy)
    shared = load("shared")
    assert used == [True, False]  # the wide batch reads its tables one by one
    monkeypatch.setattr(batch, "shared_load", lambda loads: None)
    assert load("apart") == shared
    assert ("amount", "BIGINT") in shared["paid"] and ("amount", "DOUBLE") in shared["refunded"]
