"""Tracking plans: YAML files of JSON Schemas that say which events and fields a source sends.

- `document`: a plan file as data, with the line of every value (for errors);
- `schema`: one JSON Schema checked, compiled once, and run (violation kinds);
- `plan`: a whole plan checked (`lint`), loaded (`load`) and judging messages (`Plan.judge`);
- `plans`: the plans of every source of a server, loaded at start-up and reloaded on SIGHUP;
- `infer`: a plan written from messages already received.
"""
