"""Privacy: what trackd keeps of a person, and how it forgets them.

Modules: `policy` (per-source IP and PII rules, applied in the gateway before the log),
`keys` (the per-data-dir secrets: the PII key and the subject salt), `suppression` (the list of
suppressed subjects, as salted hashes, checked at ingestion), `regulations` (the record of
requests, Segment's regulations API), `erase` (deletion from the log and quarantine), `scan`
(the raw byte scan that proves a deletion), `service` (the stage running regulations),
`shared`, `regulations_kv` and `members` (on the NATS log: the state in JetStream KV, and every
pipeline host's part of a regulation) and `api` (the admin routes).
"""
