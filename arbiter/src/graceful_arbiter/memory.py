"""Memory of a process, from /proc (Linux)."""

from __future__ import annotations


def parse_smaps_rollup(text: str) -> dict:
    """{"rss": bytes, "pss": bytes} from the text of /proc/PID/smaps_rollup (values are in kB)."""
    usage = {}
    for line in text.splitlines():
        key, _sep, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            usage[key.lower()] = int(rest.split()[0]) * 1024
    return usage


def read_usage(pid: int) -> dict:
    """{"rss": bytes|None, "pss": bytes|None}; None where the kernel or permissions say no."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            usage = parse_smaps_rollup(f.read())
    except OSError:
        usage = {}
    if "rss" not in usage:
        usage["rss"] = _status_rss(pid)
    usage.setdefault("pss", None)
    return usage


def _status_rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
