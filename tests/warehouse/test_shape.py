"""Messages into rows: flattening, reserved names, one row per table."""

from __future__ import annotations

from typing import Any

from trackd.warehouse.shape import MAX_DEPTH, flatten, shape

COMMON = {"messageId": "m1", "receivedAt": "2024-05-01T10:00:00.000Z",
          "sentAt": "2024-05-01T10:00:00.000Z", "timestamp": "2024-05-01T10:00:00.000Z",
          "originalTimestamp": "2024-05-01T09:59:59.000Z",
          "context": {"ip": "1.2.3.4", "library": {"name": "analytics-python"},
                      "page": {"url": "https://x.test/a"}, "traits": {"email": "a@b.c"}}}


def message(**fields: Any) -> dict[str, Any]:
    return {**COMMON, **fields}


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


def test_a_track_goes_to_tracks_without_properties_and_to_its_event_table() -> None:
    shaped = shape(message(type="track", userId="u1", event="Order Completed",
                           properties={"revenue": 10, "id": "p1", "event": "x"}))
    tracks, event = shaped.rows
    assert tracks.table == "tracks"
    assert tracks.values["event"] == "order_completed"
    assert tracks.values["event_text"] == "Order Completed"
    assert "revenue" not in tracks.values
    assert tracks.values["context_library_name"] == "analytics-python"
    assert tracks.values["context_traits_email"] == "a@b.c"
    assert event.table == "order_completed"
    assert event.values["revenue"] == 10
    # Reserved names keep their own meaning; the property survives under a _ name.
    assert event.values["id"] == "m1" and event.values["_id"] == "p1"
    assert event.values["event"] == "order_completed" and event.values["_event"] == "x"
    assert shaped.patches == []


def test_an_event_named_like_a_standard_table_gets_a_prefixed_table() -> None:
    shaped = shape(message(type="track", anonymousId="a", event="Users"))
    assert [r.table for r in shaped.rows] == ["tracks", "_users"]


def test_identify_feeds_identifies_and_a_users_patch_with_explicit_nulls() -> None:
    shaped = shape(message(type="identify", userId="u1", anonymousId="a1",
                           traits={"email": "x@y.z", "plan": None, "user_id": "other",
                                   "address": {"city": "Paris"}}))
    (row,) = shaped.rows
    assert row.table == "identifies"
    assert row.values["user_id"] == "u1" and row.values["_user_id"] == "other"
    assert row.values["address_city"] == "Paris"
    (patch,) = shaped.patches
    assert (patch.table, patch.id) == ("users", "u1")
    assert patch.values == {"email": "x@y.z", "plan": None, "_user_id": "other",
                            "address_city": "Paris"}


def test_an_anonymous_identify_has_no_users_patch() -> None:
    assert shape(message(type="identify", anonymousId="a1", traits={"x": 1})).patches == []


def test_page_name_property_repeating_the_call_is_not_repeated() -> None:
    (row,) = shape(message(type="page", anonymousId="a", name="Home", category="Docs",
                           properties={"name": "Home", "category": "Other",
                                       "title": "T"})).rows
    assert row.table == "pages"
    assert (row.values["name"], row.values["category"]) == ("Home", "Docs")
    assert "_name" not in row.values
    assert row.values["_category"] == "Other"
    assert row.values["title"] == "T"
    (unnamed,) = shape(message(type="screen", anonymousId="a",
                               properties={"name": "Main"})).rows
    assert unnamed.table == "screens" and unnamed.values["name"] == "Main"


def test_group_and_alias_rows() -> None:
    group = shape(message(type="group", userId="u", groupId="g1",
                          traits={"employees": 5, "group_id": "no"}))
    assert group.rows[0].table == "groups"
    assert group.rows[0].values["group_id"] == "g1"
    assert group.rows[0].values["_group_id"] == "no"
    assert (group.patches[0].table, group.patches[0].id) == ("accounts", "g1")
    (alias,) = shape(message(type="alias", userId="u", previousId="a")).rows
    assert alias.table == "aliases" and alias.values["previous_id"] == "a"


def test_a_property_cannot_pose_as_a_context_column() -> None:
    (_, row) = shape(message(type="track", userId="u", event="E",
                             properties={"context": {"ip": "6.6.6.6"}})).rows
    assert row.values["context_ip"] == "1.2.3.4"
    assert row.values["_context_ip"] == "6.6.6.6"
