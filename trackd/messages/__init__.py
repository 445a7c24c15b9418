"""The Segment spec as pure functions: limits, validation and enrichment. No I/O, stdlib only.

`trackd.client` imports this package too, so it must never import the server's dependencies.
"""
