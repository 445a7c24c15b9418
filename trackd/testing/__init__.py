"""Testing an app's analytics calls against a real trackd.

- `ephemeral`: the settings of `trackd serve --ephemeral` (throwaway data, fixed write key);
- `endpoints`: the test endpoints that mode opens (what arrived; reset);
- `pytest_plugin`: the `trackd_server` fixture (registered through the `pytest11` entry point,
  off until a test asks for it).
"""
