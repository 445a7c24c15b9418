"""Identity resolution over loaded calls: stitching, the one-user_id rule, blocked values."""

from __future__ import annotations

from collections.abc import Callable

from tests.warehouse.conftest import Log, Warehouse, enriched
from trackd.warehouse import identity

MakeWarehouse = Callable[..., Warehouse]


def resolve(w: Warehouse, id_type: str, value: str) -> set[tuple[str, str]] | None:
    with w.database.reading() as con:
        profile = identity.resolve(con, id_type, value)
    return None if profile is None else profile.identifiers


def test_an_identify_with_both_ids_stitches_anonymous_history(
        log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([
        enriched("page", anonymousId="anon-1"),
        enriched("track", anonymousId="anon-1", event="Viewed"),
        enriched("identify", userId="ann", anonymousId="anon-1",
                 traits={"email": "Ann@X.test"}),
        enriched("track", anonymousId="anon-2", event="Viewed"),  # another device...
        enriched("track", userId="ann", anonymousId="anon-2", event="Logged In"),  # ...joins
        enriched("track", anonymousId="anon-3", event="Viewed"),  # a stranger
    ])
    w = make_warehouse()
    w.loader.load_available()
    expected = {("user_id", "ann"), ("anonymous_id", "anon-1"), ("anonymous_id", "anon-2"),
                ("email", "ann@x.test")}
    assert resolve(w, "user_id", "ann") == expected
    assert resolve(w, "anonymous_id", "anon-1") == expected
    assert resolve(w, "email", "ANN@x.test") == expected
    assert resolve(w, "anonymous_id", "anon-3") == {("anonymous_id", "anon-3")}
    assert resolve(w, "user_id", "nobody") is None


def test_a_profile_keeps_one_user_id(log: Log, make_warehouse: MakeWarehouse) -> None:
    log.write([
        enriched("identify", userId="ann", anonymousId="shared-device"),
        enriched("identify", userId="bob", anonymousId="shared-device"),  # would merge: refused
        enriched("track", userId="bob", anonymousId="bob-phone", event="E"),
    ])
    w = make_warehouse()
    w.loader.load_available()
    assert resolve(w, "user_id", "ann") == {("user_id", "ann"),
                                            ("anonymous_id", "shared-device")}
    assert resolve(w, "user_id", "bob") == {("user_id", "bob"), ("anonymous_id", "bob-phone")}


def test_blocked_values_and_aliases_do_not_merge(log: Log,
                                                 make_warehouse: MakeWarehouse) -> None:
    log.write([
        enriched("identify", userId="ann", anonymousId="null"),
        enriched("identify", userId="bob", anonymousId="null"),
        enriched("identify", userId="cy", anonymousId="0000-0000"),
        enriched("alias", userId="ann", previousId="bob"),
    ])
    w = make_warehouse()
    w.loader.load_available()
    assert resolve(w, "user_id", "ann") == {("user_id", "ann")}
    assert resolve(w, "user_id", "bob") == {("user_id", "bob")}
    assert resolve(w, "anonymous_id", "null") is None


def test_calls_are_filed_under_their_highest_priority_identifier() -> None:
    profile = identity.Profile({("user_id", "ann"), ("anonymous_id", "a1")}, "use_x")
    assert identity.belongs(profile, None, "a1", None)
    assert identity.belongs(profile, "ann", "other", None)
    assert not identity.belongs(profile, "bob", "a1", None)
    assert not identity.belongs(profile, None, None, None)
