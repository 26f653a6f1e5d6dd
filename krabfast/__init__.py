"""krabfast: a fast, drop-in OpenClaw-compatible gateway."""

__version__ = "0.1.0"
