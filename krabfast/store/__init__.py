"""Durable gateway state in SQLite (WAL): paired devices, pairing requests, device tokens."""

from krabfast.store.db import Database, default_state_dir
from krabfast.store.devices import DeviceStore

__all__ = ["Database", "DeviceStore", "default_state_dir"]
