"""What ``/proc`` says about another process: CPU seconds, RSS and its TCP connections.

Linux only (the bench and the soak run daphne on this machine and read its counters from outside,
so that measuring costs the measured process nothing).
"""

from __future__ import annotations

import os
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_ESTABLISHED = "01"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by ``pid`` (its own threads, not its children)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) is in parentheses and may contain spaces: split after it.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / _CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes."""
    resident = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return resident * _PAGE_SIZE


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def established_to_port(pid: int, remote_port: int) -> int:
    """How many ESTABLISHED TCP connections ``pid`` holds to ``remote_port`` (any address)."""
    return len(established_local_ports(pid, remote_port))


def established_local_ports(pid: int, remote_port: int) -> list[int]:
    """The local ports of the ESTABLISHED TCP connections ``pid`` holds to ``remote_port``."""
    inodes = _socket_inodes(pid)
    ports = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if (
                state == _ESTABLISHED
                and int(remote.rsplit(":", 1)[1], 16) == remote_port
                and inode in inodes
            ):
                ports.append(int(local.rsplit(":", 1)[1], 16))
    return ports
