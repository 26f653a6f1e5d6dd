"""Linux /proc readers: which process listens on a port, its CPU time and its RSS.

CPU time: `/proc/PID/stat` utime+stime (all threads, dead ones included; 10 ms ticks), and,
when the kernel exposes it, the sum of `/proc/PID/task/*/schedstat` run times (nanoseconds).
`cpu_delta()` uses the nanosecond sum when no thread exited in between, else the ticks.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

PROC = Path("/proc")
TCP_LISTEN = "0A"


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


CLK_TCK = _clock_ticks()


# -- which pid listens on a port -----------------------------------------------------------------

def parse_net_tcp(text: str, port: int) -> set[int]:
    """Socket inodes in LISTEN state on `port` from the text of /proc/net/tcp or tcp6."""
    inodes: set[int] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10:
            continue
        local, state, inode = fields[1], fields[3], fields[9]
        try:
            local_port = int(local.rsplit(":", 1)[1], 16)
        except (IndexError, ValueError):
            continue
        if local_port == port and state == TCP_LISTEN and inode.isdigit() and inode != "0":
            inodes.add(int(inode))
    return inodes


def listening_inodes(port: int, proc: Path = PROC) -> set[int]:
    inodes: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            inodes |= parse_net_tcp((proc / "net" / name).read_text(), port)
        except OSError:
            continue
    return inodes


def pids_with_sockets(inodes: set[int], proc: Path = PROC) -> list[int]:
    """Pids holding an fd on any of these socket inodes (needs permission to read their fds)."""
    if not inodes:
        return []
    wanted = {f"socket:[{i}]" for i in inodes}
    found: list[int] = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = os.listdir(entry / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(entry / "fd" / fd) in wanted:
                    found.append(int(entry.name))
                    break
            except OSError:
                continue
    return sorted(found)


def find_listening_pid(port: int, proc: Path = PROC) -> int | None:
    """The pid listening on TCP `port` (the lowest when several share the socket), or None."""
    pids = pids_with_sockets(listening_inodes(port, proc), proc)
    return pids[0] if pids else None


# -- CPU and memory --------------------------------------------------------------------------------

def parse_stat_cpu_ticks(text: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/PID/stat (comm may hold spaces)."""
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state); utime and stime are fields 14 and 15.
    return int(rest[11]) + int(rest[12])


def parse_status_kib(text: str, key: str = "VmRSS") -> int | None:
    """A `kB` figure (e.g. VmRSS, VmHWM) from the text of /proc/PID/status."""
    for line in text.splitlines():
        if line.startswith(key + ":"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1])
    return None


def parse_schedstat_ns(text: str) -> int:
    """Run time in nanoseconds: the first field of /proc/PID/task/TID/schedstat."""
    return int(text.split()[0])


@dataclasses.dataclass(frozen=True)
class CpuSample:
    ticks: int
    """utime + stime in clock ticks (process total)."""
    tasks_ns: dict[int, int] | None
    """Per-thread run time in ns, or None when schedstat is unavailable."""


def read_cpu(pid: int, proc: Path = PROC) -> CpuSample | None:
    """CPU counters of `pid`, or None when the process is gone or unreadable."""
    base = proc / str(pid)
    try:
        ticks = parse_stat_cpu_ticks((base / "stat").read_text())
    except (OSError, ValueError, IndexError):
        return None
    tasks: dict[int, int] | None = {}
    try:
        for tid in os.listdir(base / "task"):
            try:
                tasks[int(tid)] = parse_schedstat_ns((base / "task" / tid / "schedstat").read_text())
            except (OSError, ValueError, IndexError):
                continue
    except OSError:
        tasks = None
    if not tasks:
        tasks = None
    return CpuSample(ticks, tasks)


def cpu_delta(before: CpuSample | None, after: CpuSample | None) -> tuple[float | None, str]:
    """Seconds of CPU used between two samples and how it was measured
    ("schedstat" ns precision, "stat" 1/CLK_TCK precision, or "n/a")."""
    if before is None or after is None:
        return None, "n/a"
    if before.tasks_ns is not None and after.tasks_ns is not None \
            and set(before.tasks_ns) <= set(after.tasks_ns):
        ns = sum(v - before.tasks_ns.get(tid, 0) for tid, v in after.tasks_ns.items())
        if ns >= 0:
            return ns / 1e9, "schedstat"
    return (after.ticks - before.ticks) / CLK_TCK, "stat"


def read_rss_kib(pid: int, proc: Path = PROC) -> int | None:
    try:
        return parse_status_kib((proc / str(pid) / "status").read_text())
    except OSError:
        return None


class ServerProbe:
    """CPU/RSS of one server process; every reading is None when there is no pid."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.cpu_source = "n/a"

    @property
    def available(self) -> bool:
        return self.pid is not None and (PROC / str(self.pid)).exists()

    def cpu(self) -> CpuSample | None:
        return read_cpu(self.pid) if self.pid is not None else None

    def cpu_seconds(self, before: CpuSample | None, after: CpuSample | None) -> float | None:
        seconds, source = cpu_delta(before, after)
        if seconds is not None and (self.cpu_source == "n/a" or source == "stat"):
            self.cpu_source = source  # "stat" if any window fell back to ticks
        return seconds

    def rss_mb(self) -> float | None:
        kib = read_rss_kib(self.pid) if self.pid is not None else None
        return None if kib is None else kib / 1024.0


# -- which krabfast core a process runs ----------------------------------------------------------

def parse_core_modules(maps_text: str) -> set[str]:
    """Names of krabfast's compiled core modules (`krabfast/_core/<name>.*.so`) mapped in
    the text of /proc/PID/maps."""
    found: set[str] = set()
    for line in maps_text.splitlines():
        path = line.rsplit(None, 1)[-1] if line else ""
        if "/krabfast/_core/" not in path or not path.endswith(".so"):
            continue
        found.add(path.rsplit("/", 1)[1].split(".", 1)[0])
    return found


def mapped_core_modules(pid: int | None, proc: Path = PROC) -> set[str] | None:
    """The compiled krabfast core modules loaded into `pid`, or None when unreadable."""
    if pid is None:
        return None
    try:
        return parse_core_modules((proc / str(pid) / "maps").read_text())
    except OSError:
        return None
