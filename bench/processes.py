"""The process trees the benchmarks start: found through /proc, measured, and stopped by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "arbiter" / "src"))

from graceful_arbiter.memory import read_usage


def process_start(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def tree(pid: int) -> list[int]:
    """The process and its descendants."""
    pids = [pid]
    for child in children(pid):
        pids.extend(tree(child))
    return pids


def tree_pss(pid: int) -> int:
    """Bytes of PSS of the process and its descendants."""
    return sum(read_usage(p)["pss"] or 0 for p in tree(pid))


def stop_tree(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM to a master, SIGKILL after `timeout`, then SIGKILL to any descendant it left behind.

    The descendants are listed before the master goes, since they are found through it, each with its start time,
    so that a PID reused by another process since is left alone.
    """
    descendants = [(pid, process_start(pid)) for pid in tree(proc.pid)[1:]]
    with contextlib.suppress(OSError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    for pid, started in descendants:
        if started is not None and process_start(pid) == started:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
