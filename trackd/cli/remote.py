"""The admin API of the server running on a data dir, as the reading commands call it."""

from __future__ import annotations

from typing import Any

import click
import httpx

from trackd.server.supervisor import read_server_info
from trackd.settings import Settings


def admin_request(settings: Settings, method: str, path: str,
                  **kw: Any) -> httpx.Response | None:
    """The admin API of the server running on this data dir, or None when none runs."""
    info = read_server_info(settings)
    if info is None:
        return None
    transport = httpx.HTTPTransport(uds=info.admin_socket)
    with httpx.Client(transport=transport, base_url="http://trackd-admin", timeout=300) as c:
        return c.request(method, path, headers={
            "Authorization": f"Bearer {settings.server.admin_token}"}, **kw)


def fail_from(response: httpx.Response) -> click.ClickException:
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200]
    return click.ClickException(message)
