"""Durable gateway state in SQLite (WAL): paired devices, pairing requests, device tokens."""

from krabfast.store.db import Database, WriteError, default_state_dir
from krabfast.store.devices import DeviceStore

__all__ = ["Database", "DeviceStore", "WriteError", "default_state_dir"]
