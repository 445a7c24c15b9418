"""Drive a real Python SDK against a trackd server; print what it sent and what it got.

Run with the SDK's own interpreter (the pinned versions live in different venvs):
    python py_driver.py segment|rudder HOST WRITE_KEY TAG GZIP(0|1|default)
Prints one JSON line: every request as sent (URL, headers, body decoded), its status, what
the SDK's calls returned, and every error the SDK reported.
"""

from __future__ import annotations

import gzip as gzip_module
import json
import sys
from datetime import UTC, datetime
from typing import Any


def main(sdk: str, host: str, write_key: str, tag: str, use_gzip: bool | None) -> None:
    out: dict[str, list[Any]] = {"requests": [], "returned": [], "errors": []}
    if sdk == "segment":
        from segment.analytics import Client
        from segment.analytics import request as request_module
    else:
        from rudderstack.analytics import Client
        from rudderstack.analytics import request as request_module

    session = request_module._session
    real_post = session.post

    def recording_post(url: str, **kwargs: Any) -> Any:
        data: Any = kwargs.get("data")
        headers = dict(kwargs.get("headers") or {})
        raw: bytes = data.encode() if isinstance(data, str) else data
        if headers.get("Content-Encoding") == "gzip":
            raw = gzip_module.decompress(raw)
        response = real_post(url, **kwargs)
        auth = kwargs.get("auth")  # rudder: requests' HTTPBasicAuth; segment: a header
        out["requests"].append({"url": url, "headers": headers, "body": json.loads(raw),
                                "auth_user": getattr(auth, "username", None),
                                "status": response.status_code})
        return response

    session.post = recording_post
    errors = out["errors"]
    options: dict[str, Any] = {} if use_gzip is None else {"gzip": use_gzip}
    client = Client(write_key, host=host, max_retries=1, upload_size=50,
                    on_error=lambda e, batch: errors.append([str(e), len(batch)]), **options)
    user = f"{sdk}-{tag}"
    when = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=UTC)
    calls = [
        client.identify(user, {"email": "a@example.com", "plan": "pro"},
                        context={"locale": "en-US"}),
        client.track(user, "Item Purchased", {"revenue": 14.99, "items": [{"sku": "a"}]}),
        client.track(anonymous_id=f"anon-{tag}", event="Viewed", timestamp=when,
                     integrations={"Mixpanel": False}),
        client.page(user, "Docs", "Home", {"url": "http://example.com"}),
        client.screen(user, "App", "Settings", {"section": "privacy"}),
        client.group(user, f"g-{tag}", {"name": "Initech", "employees": 100}),
        client.alias(f"anon-{tag}", user),
    ]
    client.flush()
    client.shutdown()
    out["returned"] = [json.loads(json.dumps(msg, default=str)) for ok, msg in calls]
    if not all(ok for ok, _ in calls):
        errors.append("a call was not queued")
    sys.stdout.write(json.dumps(out) + "\n")


if __name__ == "__main__":
    gzip_arg = sys.argv[5]
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4],
         None if gzip_arg == "default" else gzip_arg == "1")
