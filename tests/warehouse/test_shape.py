"""Flattening and the users/accounts patches made in Python."""

from __future__ import annotations

from typing import Any

from trackd.warehouse.plan import MAX_DEPTH
from trackd.warehouse.shape import flatten, patch


def test_nested_objects_flatten_with_underscores_and_arrays_become_json() -> None:
    flat = flatten({"product": {"SKU": "a1", "priceInfo": {"amount": 3}},
                    "tags": ["x", {"y": 1}], "empty": {}, "nothing": None})
    assert flat == {"product_sku": "a1", "product_price_info_amount": 3,
                    "tags": '["x",{"y":1}]', "nothing": None}


def test_unnameable_keys_are_left_out_and_digit_names_prefixed() -> None:
    assert flatten({"$$$": 1, "日本": 2, "2fa": True, "a": {"1b": 2}}) == {
        "_2fa": True, "a_1b": 2}


def test_very_deep_objects_are_kept_as_json_text_below_the_limit() -> None:
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(MAX_DEPTH + 5):
        deep = {"k": deep}
    flat = flatten({"root": deep})
    assert len(flat) == 1
    (name, value), = flat.items()
    assert name == "root" + "_k" * (MAX_DEPTH - 1)
    assert value.startswith('{"k":')


def test_an_identify_patches_users_with_explicit_nulls_and_reserved_names() -> None:
    found = patch({"type": "identify", "userId": "u1", "receivedAt": "2024-05-01T10:00:00Z",
                   "traits": {"email": "x@y.z", "plan": None, "user_id": "other",
                              "address": {"city": "Paris"}, "context": {"ip": "x"}}})
    assert found is not None
    assert (found.table, found.id, found.received_at) == ("users", "u1",
                                                          "2024-05-01T10:00:00Z")
    assert found.values == {"email": "x@y.z", "plan": None, "_user_id": "other",
                            "address_city": "Paris", "_context_ip": "x"}


def test_only_identified_identifies_and_groups_with_an_id_patch() -> None:
    assert patch({"type": "identify", "anonymousId": "a1", "traits": {"x": 1}}) is None
    assert patch({"type": "track", "userId": "u", "event": "E"}) is None
    group = patch({"type": "group", "userId": "u", "groupId": "g1",
                   "traits": {"employees": 5, "group_id": "no"}})
    assert group is not None
    assert (group.table, group.id, group.values) == (
        "accounts", "g1", {"employees": 5, "_group_id": "no"})
