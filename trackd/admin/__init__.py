"""Admin API (Starlette; off the hot path): queries, "where is my event", quarantine, profiles."""
