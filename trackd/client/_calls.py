"""The six Segment calls, with analytics-python 2.4.0's signatures, mapped to wire names."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from trackd.client._types import Callback, Message

Id = str | int | float
Result = tuple[bool, Message]


class Calls(ABC):
    """`identify`, `track`, `alias`, `group`, `page` and `screen`.

    Each takes analytics-python's parameters in its positional order, plus a keyword-only
    `callback(error, message)`, and returns `(queued, message)`: the message as it will be
    sent, and whether it was accepted for sending. Each raises `ValidationError` for a message
    the server would refuse, and nothing else.
    """

    @abstractmethod
    def _call(self, kind: str, callback: Callback | None, **fields: Any) -> Result:
        """Build, validate and send (or queue) one message of type `kind` from wire fields."""

    def identify(
        self,
        user_id: Id | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        anonymous_id: Id | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        callback: Callback | None = None,
    ) -> Result:
        """Record who the user is. Returns `(queued, message)`; see the class guarantees."""
        return self._call(
            "identify",
            callback,
            userId=user_id,
            anonymousId=anonymous_id,
            traits=_or_empty(traits),
            context=context,
            timestamp=timestamp,
            integrations=integrations,
            messageId=message_id,
        )

    def track(
        self,
        user_id: Id | None = None,
        event: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        anonymous_id: Id | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        callback: Callback | None = None,
    ) -> Result:
        """Record an action the user took. Returns `(queued, message)`."""
        return self._call(
            "track",
            callback,
            userId=user_id,
            anonymousId=anonymous_id,
            event=event,
            properties=_or_empty(properties),
            context=context,
            timestamp=timestamp,
            integrations=integrations,
            messageId=message_id,
        )

    def alias(
        self,
        previous_id: Id | None = None,
        user_id: Id | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        callback: Callback | None = None,
    ) -> Result:
        """Merge `previous_id` into `user_id`. Returns `(queued, message)`."""
        return self._call(
            "alias",
            callback,
            previousId=previous_id,
            userId=user_id,
            context=context,
            timestamp=timestamp,
            integrations=integrations,
            messageId=message_id,
        )

    def group(
        self,
        user_id: Id | None = None,
        group_id: Id | None = None,
        traits: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        anonymous_id: Id | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        callback: Callback | None = None,
    ) -> Result:
        """Put the user in a group (company, team...). Returns `(queued, message)`."""
        return self._call(
            "group",
            callback,
            userId=user_id,
            anonymousId=anonymous_id,
            groupId=group_id,
            traits=_or_empty(traits),
            context=context,
            timestamp=timestamp,
            integrations=integrations,
            messageId=message_id,
        )

    def page(
        self,
        user_id: Id | None = None,
        category: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        anonymous_id: Id | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        callback: Callback | None = None,
    ) -> Result:
        """Record a web page view. Returns `(queued, message)`."""
        return self._call(
            "page",
            callback,
            userId=user_id,
            anonymousId=anonymous_id,
            category=category,
            name=name,
            properties=_or_empty(properties),
            context=context,
            timestamp=timestamp,
            integrations=integrations,
            messageId=message_id,
        )

    def screen(
        self,
        user_id: Id | None = None,
        category: str | None = None,
        name: str | None = None,
        properties: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        timestamp: datetime | str | None = None,
        anonymous_id: Id | None = None,
        integrations: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        *,
        callback: Callback | None = None,
    ) -> Result:
        """Record an app screen view. Returns `(queued, message)`."""
        return self._call(
            "screen",
            callback,
            userId=user_id,
            anonymousId=anonymous_id,
            category=category,
            name=name,
            properties=_or_empty(properties),
            context=context,
            timestamp=timestamp,
            integrations=integrations,
            messageId=message_id,
        )


def _or_empty(value: Mapping[str, Any] | None) -> object:
    return {} if value is None else value
