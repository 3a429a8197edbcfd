"""What the benchmark reads from /proc about the processes it started (`harness.launcher`
starts and stops them): their children, memory, CPU time and connections."""

from __future__ import annotations

import contextlib
import os


def children(pid: int) -> list[int]:
    result: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as handle:
                result += [int(child) for child in handle.read().split()]
    return result


def proc_status(pid: int, key: str) -> int:
    """A kB figure from /proc/<pid>/status (VmHWM = peak RSS, VmRSS = current RSS)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


def established_connections(pids: list[int], port: int) -> dict[int, int]:
    """How many ESTABLISHED TCP connections on local `port` each process holds."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError), open("/proc/net/tcp") as handle:
        for line in handle.readlines()[1:]:
            parts = line.split()
            if int(parts[1].split(":")[1], 16) == port and parts[3] == "01":
                inodes.add(parts[9])
    counts: dict[int, int] = {}
    for pid in pids:
        count = 0
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        count += 1
        counts[pid] = count
    return counts
