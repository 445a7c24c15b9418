"""Privacy: what trackd keeps of a person, and how it forgets them.

Modules: `policy` (per-source IP and PII rules, applied in the gateway before the log),
`keys` (the per-data-dir secrets: the PII key and the subject salt), `suppression` (the list of
suppressed subjects, as salted hashes, checked at ingestion), `gate` (what a gateway worker
asks of both), `regulations` (the record of requests, Segment's regulations API), `subjects`
(which messages are a regulation's), `service` (the stage running regulations), `steps` (what
each store's step of one does), `stores` (the seams to the warehouse, log and archive),
`erase` (deletion from the log and quarantine, and the raw byte scan that proves a deletion),
`ledgers` and `notify` (the destinations' ledgers, and delete events sent on), `retention`
(per-source retention), `shared`, `regulations_kv` and `members` (on the NATS log: the state in
JetStream KV, and every pipeline host's part of a regulation), `api` (the admin routes) and
`wiring` (the stage and its routes built from the settings).
"""
