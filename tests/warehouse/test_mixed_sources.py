"""One batch with tracks of two sources, one of them wide (typed the long way, over 64 new
columns): both sources' rows are loaded (found by mutation testing: a load that stopped after
the wide source lost the other's tracks; docs/testing.md)."""

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
