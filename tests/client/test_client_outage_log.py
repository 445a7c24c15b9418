"""With the server down, the first failed attempt is logged at once (not when the retries run
out minutes later), with what to change to give up sooner; and only once per outage."""

from __future__ import annotations

import logging
import socket
import time

from tests.conftest import eventually
from trackd.client import Client


def test_the_first_failed_attempt_is_logged_at_once() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Collect(level=logging.WARNING)
    logger = logging.getLogger("trackd.client")
    # Retries 5 s apart or more: a warning seen before then came from the first attempt.
    client = Client("wk", f"http://127.0.0.1:{port}", log_handler=handler, backoff_base=10,
                    flush_interval=0.01)
    try:
        started = time.monotonic()
        client.track("user123", "Product Purchased")
        client.track("user123", "Product Purchased")
        assert not client.flush(timeout=0.2)  # still retrying
        eventually(lambda: records, timeout=5)
        assert time.monotonic() - started < 5
        (record,) = records
        text = record.getMessage()
        assert f"http://127.0.0.1:{port}/v1/batch" in text and "Connection refused" in text
        assert "retrying up to 10 times over at most 490 s" in text
        assert "lower max_retries or backoff_max to give up sooner" in text
    finally:
        client.shutdown(timeout=0.5)
        logger.removeHandler(handler)
