"""Batches that mix what the loader handles apart, found by mutation testing (docs/testing.md):
tracks of two sources, one of them wide (typed the long way, over 64 new columns), must both
load (a load that stopped after the wide source lost the other's tracks); overflows of an
event table and of users in one batch must all be counted (one count replaced the other), and
so must the type conflicts of every table."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.warehouse.conftest import Log, Warehouse, enriched


@pytest.mark.parametrize("wide", ["web", "backend"])
def test_a_wide_source_and_a_plain_one_in_one_batch_both_load(
        log: Log, make_warehouse: Callable[..., Warehouse], wide: str) -> None:
    plain = "backend" if wide == "web" else "web"
    messages = [
        enriched("track", source=wide, userId="u1", event="Wide",
                 properties={f"p{i}": i for i in range(70)}),
        enriched("track", source=plain, userId="u2", event="Plain", properties={"x": 1}),
    ]
    log.write(messages)
    w = make_warehouse()
    assert w.loader.load_available() == 2
    assert w.rows(f"SELECT id, event FROM {wide}.tracks") == [(messages[0]["messageId"], "wide")]
    assert w.rows(f"SELECT id, event FROM {plain}.tracks") == [
        (messages[1]["messageId"], "plain")]
    assert w.rows(f"SELECT p69 FROM {wide}.wide") == [(69,)]
    assert w.rows(f"SELECT x FROM {plain}.plain") == [(1,)]


def test_overflows_of_an_event_table_and_of_users_in_one_batch_are_all_counted(
        log: Log, make_warehouse: Callable[..., Warehouse]) -> None:
    log.write([enriched("track", userId="u1", event="Wide",
                        properties={f"p{j:03d}": j for j in range(40)}),
               enriched("identify", userId="u1", traits={f"t{j:03d}": j for j in range(40)})])
    w = make_warehouse(max_columns_per_table=30)
    assert w.loader.load_available() == 2
    assert len(w.rows("SELECT _overflow FROM web.wide WHERE _overflow IS NOT NULL")) == 1
    assert len(w.rows("SELECT _overflow FROM web.users WHERE _overflow IS NOT NULL")) == 1
    values = w.metrics.snapshot()["trackd_warehouse_overflow_total"]["values"]
    counted = sum(v for labels, v in values if labels == ["web", "columns"])
    assert counted == len(w.rows(
        "SELECT 1 FROM web.wide WHERE _overflow IS NOT NULL UNION ALL "
        "SELECT 1 FROM web.users WHERE _overflow IS NOT NULL UNION ALL "
        "SELECT 1 FROM web.identifies WHERE _overflow IS NOT NULL"))


def test_type_conflicts_of_every_table_of_a_batch_are_counted(
        log: Log, make_warehouse: Callable[..., Warehouse]) -> None:
    """Rows with type conflicts in several tables of one batch, loaded apart (pages, screens;
    a wide source's event tables one by one), and some tables without: all are counted."""
    log.write([enriched("page", userId="u", properties={"n": 1}),
               enriched("screen", userId="u", properties={"n": 1}),
               enriched("track", userId="u", event="A", properties={"p": 1}),
               enriched("track", userId="u", event="B", properties={"q": 1})])
    w = make_warehouse()
    assert w.loader.load_available() == 4
    assert w.metric("trackd_warehouse_type_conflicts_total") == 0
    log.write([enriched("page", userId="u", properties={"n": "x"}),  # a conflict
               enriched("screen", userId="u", properties={"n": 2}),
               enriched("identify", userId="u", traits={"plan": "pro"}),
               enriched("track", userId="u", event="A",  # a conflict, and wide
                        properties={"p": "y", **{f"w{j}": j for j in range(70)}}),
               enriched("track", userId="u", event="B", properties={"q": 2})])
    assert w.loader.load_available() == 5
    assert w.rows("SELECT count(*) FROM web.pages WHERE _type_conflicts IS NOT NULL "
                  "UNION ALL SELECT count(*) FROM web.a WHERE _type_conflicts IS NOT NULL"
                  ) == [(1,), (1,)]
    assert w.metric("trackd_warehouse_type_conflicts_total") == 2
    # A plain batch (its tracks and event tables in one shared pass): a conflict in a, not b.
    log.write([enriched("track", userId="u", event="A", properties={"p": "z"}),
               enriched("track", userId="u", event="B", properties={"q": 3})])
    assert w.loader.load_available() == 2
    assert w.metric("trackd_warehouse_type_conflicts_total") == 3
