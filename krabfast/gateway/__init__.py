"""The gateway: shared state (`hub`), policies, and the picows/uvloop adapter (`server`)."""
