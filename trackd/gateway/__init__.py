"""HTTP tracking API -> log. The gateway's only side effect is appending to the log."""
