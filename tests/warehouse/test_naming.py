"""Segment's go-snakecase, and the warehouse's naming rules on top of it."""

from __future__ import annotations

import pytest

from trackd.warehouse.naming import event_table, identifier, snakecase


@pytest.mark.parametrize(("name", "expected"), [
    # The warehouse contract's examples.
    ("sampleText", "sample_text"),
    ("SAMPLE 2 TEXT", "sample_2_text"),
    ("___$$Base64Encode", "base64_encode"),
    ("FOO:BAR$BAZ", "foo_bar_baz"),
    ("something.com", "something_com"),
    ("sample___text", "sample_text"),
    ("Order Completed", "order_completed"),
    ("accountType", "account_type"),
    # segmentio/go-snakecase's own test table.
    ("sample text", "sample_text"),
    ("sample-text", "sample_text"),
    ("sample_text", "sample_text"),
    ("inviteYourCustomersAddInvites", "invite_your_customers_add_invites"),
    ("sample 2 Text", "sample_2_text"),
    ("   sample   2    Text   ", "sample_2_text"),
    ("   $#$sample   2    Text   ", "sample_2_text"),
    ("FOO#BAR#BAZ", "foo_bar_baz"),
    ("$something%", "something"),
    ("•¶§ƒ˚foo˙∆˚¬", "foo"),
    # Behaviour that follows from the algorithm.
    ("userID", "user_id"),
    ("HTTPServer", "httpserver"),
    ("version2Beta", "version_2beta"),  # a digit before an uppercase letter starts a word
    ("_private", "_private"),
    ("trailing_", "trailing"),
    ("café au lait", "caf_au_lait"),
    ("", ""),
    ("日本語", ""),
])
def test_snakecase_matches_go_snakecase(name: str, expected: str) -> None:
    assert snakecase(name) == expected


@pytest.mark.parametrize(("name", "expected"), [
    ("2fa enabled", "_2fa_enabled"),
    ("3D Secure", "_3d_secure"),
    ("plan", "plan"),
    ("$$$", ""),
])
def test_identifier_prefixes_a_leading_digit(name: str, expected: str) -> None:
    assert identifier(name) == expected


@pytest.mark.parametrize(("event", "table"), [
    ("Order Completed", "order_completed"),
    ("Tracks", "_tracks"),
    ("users", "_users"),
    ("Identifies", "_identifies"),
    ("Page Viewed", "page_viewed"),
    ("1st Purchase", "_1st_purchase"),
    ("¿¡", ""),
])
def test_event_table_names(event: str, table: str) -> None:
    assert event_table(event) == table
