"""Routing tables: integrations object (Segment spec 3.5), consent (3.10), sources."""

from __future__ import annotations

from typing import Any

import pytest

from trackd.destinations.routing import (
    Route,
    integrations_allow,
    missing_consent,
    refusal,
)


@pytest.mark.parametrize(("integrations", "allowed"), [
    (None, True),                                        # absent: All defaults to true
    ({}, True),
    ("garbage", True),                                   # not an object: ignored
    ({"All": True}, True),
    ({"All": False}, False),                             # blocks all but those named
    ({"All": False, "Hook": True}, True),
    ({"All": False, "Hook": {"apiKey": "x"}}, True),     # an object value counts as enabled
    ({"All": False, "Hook": {}}, True),                  # even an empty one
    ({"All": False, "hook": True}, False),               # names are case-sensitive
    ({"All": False, "Other": True}, False),
    ({"Hook": False}, False),
    ({"Hook": False, "All": True}, False),               # the name wins over All
    ({"All": True, "Hook": False, "Other": True}, False),
    ({"hook": False}, True),                             # another destination's flag
    ({"Other": False}, True),
    ({"All": {"x": 1}}, True),
    ({"Hook": None}, False),
    ({"All": None}, False),
])
def test_integrations(integrations: Any, allowed: bool) -> None:
    assert integrations_allow(integrations, "Hook") is allowed


@pytest.mark.parametrize(("context", "categories", "missing"), [
    (None, ["ads"], []),                                             # no context: no gating
    ({}, ["ads"], []),                                               # no consent object
    ({"consent": {}}, ["ads"], []),                                  # empty consent object
    ({"consent": {"categoryPreferences": {}}}, ["ads"], ["ads"]),    # empty prefs: nothing granted
    ({"consent": {"categoryPreferences": {"ads": True}}}, ["ads"], []),
    ({"consent": {"categoryPreferences": {"ads": False}}}, ["ads"], ["ads"]),
    ({"consent": {"categoryPreferences": {"ads": "true"}}}, ["ads"], ["ads"]),  # only true
    ({"consent": {"categoryPreferences": {"ads": True, "analytics": True}}},
     ["ads", "analytics"], []),                                      # all granted
    ({"consent": {"categoryPreferences": {"ads": True, "analytics": False}}},
     ["ads", "analytics"], ["analytics"]),                           # all are needed
    ({"consent": {"categoryPreferences": {"ads": True}}}, ["ads", "analytics"], ["analytics"]),
    ({"consent": {"categoryPreferences": {"ads": False}}}, [], []),  # no categories: no gate
    ({"consent": {"other": 1}}, ["ads"], []),                        # no preferences given
])
def test_consent(context: Any, categories: list[str], missing: list[str]) -> None:
    assert missing_consent(context, categories) == missing


GRANTED = {"consent": {"categoryPreferences": {"ads": True}}}
DENIED = {"consent": {"categoryPreferences": {"ads": False}}}


@pytest.mark.parametrize(("message", "source", "route", "why"), [
    ({}, "web", Route.of("Hook"), None),
    ({}, "web", Route.of("Hook", sources=["web"]), None),
    ({}, "backend", Route.of("Hook", sources=["web"]), "source backend is not routed to Hook"),
    ({"context": GRANTED}, "web", Route.of("Hook", consent_categories=["ads"]), None),
    ({"context": DENIED}, "web", Route.of("Hook", consent_categories=["ads"]),
     "filtered by end-user consent: ads not granted"),
    # consent is checked first; then integrations can still block
    ({"context": GRANTED, "integrations": {"Hook": False}}, "web",
     Route.of("Hook", consent_categories=["ads"]),
     "disabled by the message's integrations object"),
    ({"context": DENIED, "integrations": {"Hook": False}}, "web",
     Route.of("Hook", consent_categories=["ads"]),
     "filtered by end-user consent: ads not granted"),
    # integrations cannot override a missing consent
    ({"context": DENIED, "integrations": {"All": False, "Hook": True}}, "web",
     Route.of("Hook", consent_categories=["ads"]),
     "filtered by end-user consent: ads not granted"),
    ({"integrations": {"All": False, "Hook": True}}, "web", Route.of("Hook"), None),
])
def test_refusal(message: dict[str, Any], source: str, route: Route, why: str | None) -> None:
    assert refusal(message, source, route) == why
