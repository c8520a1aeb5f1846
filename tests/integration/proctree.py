"""The process tree as /proc shows it, for tests that look at a master's children.

A module of its own, not conftest: several test directories have a conftest.py, and pytest imports each
as `conftest`, so `from conftest import ...` can reach another directory's.
"""

import os


def children(pid):
    """PIDs of the processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                text = handle.read()
        except OSError:
            continue
        if int(text[text.rfind(")") + 2 :].split()[1]) == pid:
            found.append(int(entry))
    return found


def alive(pid):
    """True for a running process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return False
    return text[text.rfind(")") + 2 :].split()[0] not in ("Z", "X")
