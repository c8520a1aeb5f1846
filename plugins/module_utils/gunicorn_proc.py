# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Finding a gunicorn master, its workers and a second master of an upgrade in flight, through /proc.

The parse_* and classify_* functions are pure (text in, values out) and unit-tested; the functions that read
/proc are thin wrappers around them. Linux only, stdlib only, Python 3.9+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
import stat as stat_mod
import time

PROC = "/proc"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# A worker's heartbeat file: gunicorn's WorkerTmp, created by mkstemp(prefix="wgunicorn-") and unlinked at once.
HEARTBEAT_PREFIX = "wgunicorn-"
# gunicorn sets the heartbeat file's mtime to time.monotonic() on every notify(); at creation it holds the wall
# clock. A value below this is a monotonic reading: the worker has run its main loop at least once.
MONOTONIC_CEILING = 10**9
# How much earlier than the pidfile's mtime a master may have started, to absorb clock rounding.
START_SLACK = 1.0


class DiscoveryError(Exception):
    """The master cannot be found or is not the process the caller expects; the message says why."""


# ---------------------------------------------------------------------------------------------------------------
# Pure parsing
# ---------------------------------------------------------------------------------------------------------------


def parse_stat(text):
    """Fields of /proc/PID/stat that matter here: state, ppid and starttime (clock ticks since boot)."""
    end = text.rfind(")")
    if end < 0:
        raise ValueError("malformed stat line")
    comm = text[text.find("(") + 1 : end]
    rest = text[end + 2 :].split()
    # rest[0] is field 3 (state); starttime is field 22.
    return {"comm": comm, "state": rest[0], "ppid": int(rest[1]), "starttime": int(rest[19])}


def parse_pidfile(text):
    """The PID in a pidfile's text, or None when it holds none."""
    text = (text or "").strip()
    if not text or not text.isdigit():
        return None
    pid = int(text)
    return pid if pid > 0 else None


def parse_memory(smaps_rollup=None, status=None):
    """RSS and PSS in bytes from /proc/PID/smaps_rollup (preferred) or /proc/PID/status (RSS only)."""
    rss = pss = None
    for line in (smaps_rollup or "").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "Rss:":
            rss = int(parts[1]) * 1024
        elif len(parts) >= 2 and parts[0] == "Pss:":
            pss = int(parts[1]) * 1024
    if rss is None:
        for line in (status or "").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "VmRSS:":
                rss = int(parts[1]) * 1024
    return {"rss": rss, "pss": pss}


def parse_environ(data):
    """/proc/PID/environ (NUL-separated) as a dict."""
    env = {}
    if isinstance(data, bytes):
        data = data.decode("utf-8", "replace")
    for item in (data or "").split("\0"):
        if "=" in item:
            key, value = item.split("=", 1)
            env[key] = value
    return env


_GUNICORN_SCRIPT = re.compile(r"(^|/)(graceful-gunicorn|gunicorn)(\.exe)?$")
_TITLE = re.compile(r"^gunicorn: (master|worker) \[(.*)\]")


def classify_cmdline(argv):
    """What a command line is: {'flavour': 'graceful'|'stock'|None, 'role': 'master'|'worker'|None, 'config'}.

    The role is known only from a process title (setproctitle installed); otherwise masters and their forked
    workers share one command line and the caller tells them apart through the process tree.
    """
    result = {"flavour": None, "role": None, "config": None, "title": None}
    if not argv:
        return result
    if len(argv) == 1 and _TITLE.match(argv[0]):
        # setproctitle rewrote the whole command line.
        match = _TITLE.match(argv[0])
        result.update(flavour="unknown", role=match.group(1), title=argv[0])
        return result
    for index, arg in enumerate(argv[:4]):
        if _GUNICORN_SCRIPT.search(arg):
            result["flavour"] = "graceful" if "graceful-gunicorn" in arg else "stock"
            break
        if arg == "-m" and index + 1 < len(argv):
            module = argv[index + 1]
            if module in ("gunicorn", "gunicorn.app.wsgiapp"):
                result["flavour"] = "stock"
            elif module.startswith("graceful_arbiter"):
                result["flavour"] = "graceful"
            break
    for index, arg in enumerate(argv):
        if arg in ("-c", "--config") and index + 1 < len(argv):
            result["config"] = argv[index + 1]
        elif arg.startswith("--config="):
            result["config"] = arg.split("=", 1)[1]
        elif arg.startswith("-c") and len(arg) > 2 and not arg.startswith("--"):
            result["config"] = arg[2:]
    return result


def heartbeat_seen(mtime):
    """Whether a heartbeat file's mtime says the worker has notified the master at least once."""
    return mtime is not None and mtime < MONOTONIC_CEILING


# ---------------------------------------------------------------------------------------------------------------
# Reading /proc (thin)
# ---------------------------------------------------------------------------------------------------------------


def _read(path, mode="r"):
    try:
        with open(path, mode) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def uptime():
    text = _read(os.path.join(PROC, "uptime"))
    return float(text.split()[0]) if text else time.monotonic()


def to_since_boot(epoch):
    """Convert a wall-clock time to seconds since boot."""
    return epoch - (time.time() - uptime())


def stat(pid):
    text = _read(os.path.join(PROC, str(pid), "stat"))
    if not text:
        return None
    try:
        return parse_stat(text)
    except (ValueError, IndexError):
        return None


def alive(pid):
    """True for a running process (a zombie counts as gone)."""
    if not pid:
        return False
    info = stat(pid)
    return bool(info) and info["state"] not in ("Z", "X", "x")


def cmdline(pid):
    data = _read(os.path.join(PROC, str(pid), "cmdline"), "rb")
    if not data:
        return []
    return [part.decode("utf-8", "replace") for part in data.rstrip(b"\0").split(b"\0")]


def environ(pid):
    data = _read(os.path.join(PROC, str(pid), "environ"), "rb")
    return parse_environ(data) if data is not None else None


def cwd(pid):
    try:
        return os.readlink(os.path.join(PROC, str(pid), "cwd"))
    except OSError:
        return None


def started_since_boot(pid, info=None):
    info = info or stat(pid)
    return info["starttime"] / float(CLOCK_TICKS) if info else None


def memory(pid):
    return parse_memory(
        _read(os.path.join(PROC, str(pid), "smaps_rollup")), _read(os.path.join(PROC, str(pid), "status"))
    )


def heartbeat_mtime(pid):
    """mtime of the worker's gunicorn heartbeat file, or None when it cannot be read (other user, not a worker)."""
    fd_dir = os.path.join(PROC, str(pid), "fd")
    try:
        fds = os.listdir(fd_dir)
    except OSError:
        return None
    for fd in fds:
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if os.path.basename(target).startswith(HEARTBEAT_PREFIX):
            try:
                return os.stat(os.path.join(fd_dir, fd)).st_mtime
            except OSError:
                return None
    return None


def children_by_parent():
    tree = {}
    try:
        entries = os.listdir(PROC)
    except OSError:
        return tree
    for entry in entries:
        if not entry.isdigit():
            continue
        info = stat(entry)
        if info and info["state"] not in ("Z", "X", "x"):
            tree.setdefault(info["ppid"], []).append(int(entry))
    return tree


def read_pidfile(path):
    """(pid or None, mtime or None) of a pidfile; (None, None) when it does not exist.

    A pidfile lies in a directory the service user owns: it is opened without following a symlink and must be a
    regular file, else DiscoveryError.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise DiscoveryError("pidfile %s is a symlink: not following it" % path) from None
        return None, None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat_mod.S_ISREG(info.st_mode):
            raise DiscoveryError("pidfile %s is not a regular file" % path)
        text = handle.read(64).decode("ascii", "replace")
    return parse_pidfile(text), info.st_mtime


# ---------------------------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------------------------


def process_info(pid, now_since_boot=None):
    info = stat(pid)
    if not info:
        return None
    now_since_boot = uptime() if now_since_boot is None else now_since_boot
    started = started_since_boot(pid, info)
    boot_epoch = time.time() - now_since_boot
    result = {
        "pid": int(pid),
        "ppid": info["ppid"],
        "started": round(boot_epoch + started, 3),
        "age": round(max(0.0, now_since_boot - started), 3),
    }
    result.update(memory(pid))
    return result


def worker_info(pid, now_since_boot, ready_seconds):
    result = process_info(pid, now_since_boot)
    if result is None:
        return None
    mtime = heartbeat_mtime(pid)
    result["heartbeat"] = None if mtime is None else heartbeat_seen(mtime)
    result["heartbeat_age"] = round(time.monotonic() - mtime, 3) if result["heartbeat"] else None
    # Ready: it ran its main loop (when that can be seen) and has been alive long enough.
    result["ready"] = result["heartbeat"] is not False and result["age"] >= ready_seconds
    return result


def is_reexec_child(child_pid, master_pid, tree):
    """Whether a child of a master is the second master of a USR2 upgrade rather than a worker."""
    env = environ(child_pid)
    # The re-executed master's environment names its parent; a worker's names the master's own parent, if any.
    if env is not None and env.get("GUNICORN_PID") == str(master_pid):
        return True
    # A worker has a heartbeat file; a master has none of its own but has children with one.
    if heartbeat_mtime(child_pid) is None and tree.get(child_pid):
        return any(heartbeat_mtime(grandchild) is not None for grandchild in tree[child_pid])
    return False


def release_name(cwd, releases_dir=None):
    """The release a master runs, from its working directory: <root>/releases/<name>[/...] gives <name>.

    The app can move its master's working directory: with `releases_dir` (the instance's trusted releases tree),
    only a directory under that tree names a release."""
    if releases_dir:
        base = releases_dir.rstrip("/") + "/"
        if not (cwd or "").startswith(base):
            return None
        return cwd[len(base) :].split("/", 1)[0] or None
    parts = (cwd or "").split("/")
    if "releases" in parts[:-1]:
        return parts[parts.index("releases") + 1] or None
    return None


def release_of(pid, releases_dir=None):
    """The release directory a master started in. A master chdirs into `current` when it starts, and the
    kernel keeps the directory the link pointed to then, so this is what the master runs, whatever
    `current` points to now (unless the app moved it: see release_name)."""
    try:
        return release_name(os.readlink("/proc/%d/cwd" % pid), releases_dir)
    except OSError:
        return None


def snapshot(master_pid, pidfile=None, ready_seconds=1.0, judge_new=None, releases_dir=None):
    """Everything observable about a master: its workers and any second master of an upgrade in flight.

    <pidfile>.2 lies in a directory the service user owns: the PID it names is only a hint. With `judge_new`
    (a PID -> refusal reason or None), a candidate second master it refuses is listed under `refused`, never
    reported as the new master; without it (reporting only), any live PID there other than the master counts.
    """
    now = uptime()
    tree = children_by_parent()
    master = process_info(master_pid, now)
    if master is None:
        return {"master": None, "workers": [], "new_master": None, "new_workers": [], "refused": []}
    master["cmdline"] = " ".join(cmdline(master_pid))[:1000]
    master["flavour"] = classify_cmdline(cmdline(master_pid))["flavour"]
    master["release"] = release_of(master_pid, releases_dir)
    new_pid = None
    refused = []
    if pidfile:
        second = pidfile + ".2"
        try:
            candidate, _mtime = read_pidfile(second)
        except DiscoveryError as exc:
            candidate = None
            refused.append({"pid": None, "source": second, "reason": str(exc)})
        if candidate and alive(candidate):
            reason = judge_new(candidate) if judge_new else (None if candidate != master_pid else "the master")
            if reason is None:
                new_pid = candidate
            elif judge_new:
                refused.append({"pid": candidate, "source": second, "reason": reason})
    workers = []
    for child in sorted(tree.get(master_pid, [])):
        if child == new_pid:
            continue
        if new_pid is None and is_reexec_child(child, master_pid, tree):
            reason = judge_new(child) if judge_new else None
            if reason is None:
                new_pid = child
            else:
                refused.append({"pid": child, "source": "the children of master %d" % master_pid, "reason": reason})
            continue
        info = worker_info(child, now, ready_seconds)
        if info:
            workers.append(info)
    new_master = None
    new_workers = []
    if new_pid:
        new_master = process_info(new_pid, now)
        if new_master:
            new_master["cmdline"] = " ".join(cmdline(new_pid))[:1000]
            new_master["release"] = release_of(new_pid, releases_dir)
            for child in sorted(tree.get(new_pid, [])):
                info = worker_info(child, now, ready_seconds)
                if info:
                    new_workers.append(info)
    return {
        "master": master,
        "workers": workers,
        "new_master": new_master,
        "new_workers": new_workers,
        "refused": refused,
    }
