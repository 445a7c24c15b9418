"""trackd: self-hosted, Segment-compatible event tracking."""

__version__ = "0.1.0"
