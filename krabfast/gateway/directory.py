"""The connection directory: every live socket of this process, the ones still in their
handshake (oldest first, for the deadline sweep), pre-connect counts per address, and an
index of open sockets per device (find and close a device's sockets without a scan).

A shared implementation (Redis) would add the other processes' sockets for lookups and
forward `close_device` to them.
"""

from __future__ import annotations

from collections import Counter


class ConnectionDirectory:
    def __init__(self) -> None:
        self.connections: dict[str, object] = {}   # conn id -> Connection (all live sockets)
        self.handshakes: dict[str, object] = {}    # pre-connect, oldest first
        self.preauth_by_ip: Counter[str] = Counter()
        self._by_device: dict[str, dict[str, object]] = {}  # device id -> conn id -> open conn
        self._open = 0

    # -- lifecycle (called by Connection) -------------------------------------------------------
    def add(self, conn) -> None:
        self.connections[conn.conn_id] = conn
        self.handshakes[conn.conn_id] = conn
        self.preauth_by_ip[conn.peer_ip] += 1

    def opened(self, conn) -> None:
        self._leave_handshake(conn)
        self._open += 1
        if conn.device is not None:
            self._by_device.setdefault(conn.device.id, {})[conn.conn_id] = conn

    def remove(self, conn, was_open: bool) -> None:
        if self.connections.pop(conn.conn_id, None) is None:
            return
        if not was_open:
            self._leave_handshake(conn)
            return
        self._open -= 1
        if conn.device is not None:
            socks = self._by_device.get(conn.device.id)
            if socks is not None:
                socks.pop(conn.conn_id, None)
                if not socks:
                    del self._by_device[conn.device.id]

    def _leave_handshake(self, conn) -> None:
        if self.handshakes.pop(conn.conn_id, None) is None:
            return
        counts = self.preauth_by_ip
        counts[conn.peer_ip] -= 1
        if counts[conn.peer_ip] <= 0:
            del counts[conn.peer_ip]

    # -- lookups --------------------------------------------------------------------------------
    def get(self, conn_id: str):
        return self.connections.get(conn_id)

    def open_count(self) -> int:
        return self._open

    def preauth_count(self, peer_ip: str) -> int:
        return self.preauth_by_ip.get(peer_ip, 0)

    def all(self) -> list:
        return list(self.connections.values())

    def device_sockets(self, device_id: str, role: str | None = None) -> list:
        socks = self._by_device.get(device_id)
        if not socks:
            return []
        return [c for c in socks.values() if role is None or c.role == role]

    def device_connected(self, device_id: str) -> bool:
        return device_id in self._by_device

    def close_device(self, device_id: str, role: str | None, code: int, reason: str) -> int:
        """Close the device's open sockets (for `role`, or all); returns how many."""
        doomed = self.device_sockets(device_id, role)
        for conn in doomed:
            conn.close(code, reason)
        return len(doomed)

    # -- handshake deadlines --------------------------------------------------------------------
    def expire_handshakes(self, now: float) -> int:
        """Close sockets whose handshake deadline has passed; returns how many."""
        expired = []
        for conn in self.handshakes.values():
            if conn.deadline > now:
                break  # deadlines grow with insertion order
            expired.append(conn)
        for conn in expired:
            conn.handshake_timed_out()
        return len(expired)
