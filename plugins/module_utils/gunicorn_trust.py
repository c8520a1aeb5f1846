# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What root may believe about a process or a path, and the one way the modules signal and swap `current`.

Root acts only on what it can verify from root-owned state: systemd's MainPID and ControlGroup, the manifest
under /etc/gunicorn it wrote, and the releases tree it created. The service user owns the pidfile directory and
the control socket's directory, and the app runs inside the master: a PID read from <pidfile>.2 or from the
control socket, the master's $PWD and its working directory are hints, checked before they are used.

The judge_* functions are pure (facts in, a refusal reason or None out) and table-tested. `Handle` and
`send_signal` are the only places a signal is sent: through a pidfd when the kernel has one (the identity is
checked after the pidfd is opened, so a PID reused in between is never hit), else with os.kill right after a
re-check that the PID is still the process that was checked. Linux only, stdlib only, Python 3.9+.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
import signal
import stat as stat_mod

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_proc as proc

INSTANCE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
UNIT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:_.@\\-]{0,245}\.service")
RELEASE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
USER_RE = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


class Refused(proc.DiscoveryError):
    """A PID, file or path that failed a trust check; the message names it and says why."""


# ---------------------------------------------------------------------------------------------------------------
# Facts about a process (thin readers) and pure judges over them
# ---------------------------------------------------------------------------------------------------------------


def parse_cgroup(text):
    """The cgroup path of /proc/PID/cgroup: the unified (v2) entry, else the v1 name=systemd hierarchy."""
    legacy = None
    for line in (text or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            return parts[2]
        if "name=systemd" in parts[1].split(","):
            legacy = parts[2]
    return legacy


def parse_uid(status_text):
    """The real UID of /proc/PID/status."""
    for line in (status_text or "").splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    return None


def in_cgroup(path, unit_cgroup):
    """Whether a process cgroup path lies in a unit's ControlGroup (equal, or below it)."""
    if not path or not unit_cgroup:
        return False
    base = unit_cgroup.rstrip("/")
    return path == base or path.startswith(base + "/")


def facts(pid):
    """What /proc says about a PID: pid, ppid, state, starttime, uid, exe, cgroup, argv, cwd; None when gone."""
    info = proc.stat(pid)
    if not info or info["state"] in ("Z", "X", "x"):
        return None
    base = os.path.join(proc.PROC, str(pid))
    try:
        exe = os.readlink(os.path.join(base, "exe"))
    except OSError:
        exe = None
    if exe and exe.endswith(" (deleted)"):
        exe = exe[: -len(" (deleted)")]
    cgroup_text = proc._read(os.path.join(base, "cgroup"))
    fact = {
        "pid": int(pid),
        "ppid": info["ppid"],
        "state": info["state"],
        "starttime": info["starttime"],
        "uid": parse_uid(proc._read(os.path.join(base, "status"))),
        "exe": exe,
        "cgroup": parse_cgroup(cgroup_text),
        "argv": proc.cmdline(pid),
        "cwd": proc.cwd(pid),
    }
    # A process that exited while it was read (a draining worker) leaves some of these unread (root reads any live
    # process's cgroup file): what was read is no evidence of anything, and must not pass for a live process outside
    # every cgroup.
    after = proc.stat(pid)
    if cgroup_text is None or not after or after["state"] in ("Z", "X", "x") or after["starttime"] != info["starttime"]:
        return None
    return fact


def same_process(now, then):
    """Whether two readings of a PID are the same process (a PID and its start time name one process)."""
    return bool(now and then) and now["pid"] == then["pid"] and now["starttime"] == then["starttime"]


def _config_matches(seen, expected):
    if not os.path.isabs(seen):
        # Relative to a working directory the app can change: not a confirmation.
        return False
    if os.path.normpath(seen) == os.path.normpath(expected):
        return True
    return os.path.realpath(seen) == os.path.realpath(expected)


def judge_master(fact, unit, expected_config=None, pidfile_since_boot=None, started_since_boot=None, expected_uid=None):
    """Why a process is not the master of this instance, or None when it is.

    `unit` is common.unit_state(): under a loaded unit the master must be its MainPID and in its ControlGroup.
    The config the master runs must be confirmed from its command line; when it cannot be (no absolute -c, or
    a custom process title) only being the unit's MainPID inside the unit's cgroup confirms it.
    """
    if fact is None:
        return "it is not running"
    argv = fact.get("argv") or []
    info = proc.classify_cmdline(argv)
    if not info["flavour"]:
        return "its command line is not gunicorn's: %s" % " ".join(argv)[:300]
    if info["role"] == "worker":
        return "it is a gunicorn worker, not a master"
    if expected_uid is not None and fact.get("uid") != expected_uid:
        # A master of this instance runs as the service user the manifest names; root or another user's
        # process is nothing these modules may signal, whatever its command line says.
        return "it runs as uid %s, not the service user's uid %d" % (fact.get("uid"), expected_uid)
    unit_confirms = False
    if unit and unit.get("checked"):
        main_pid = unit.get("main_pid")
        if not main_pid:
            return "unit %s is loaded but has no main process (ActiveState=%s)" % (
                unit.get("name"),
                unit.get("active_state"),
            )
        if fact["pid"] != main_pid:
            return "it is not the MainPID of unit %s (%d)" % (unit.get("name"), main_pid)
        if not in_cgroup(fact.get("cgroup"), unit.get("control_group")):
            return "it is outside unit %s's cgroup %s (its cgroup is %s)" % (
                unit.get("name"),
                unit.get("control_group") or "(none)",
                fact.get("cgroup"),
            )
        unit_confirms = True
    if expected_config:
        seen = info["config"]
        if seen and _config_matches(seen, expected_config):
            pass
        elif seen and os.path.isabs(seen):
            return "it runs config %s, not %s" % (seen, expected_config)
        elif not unit_confirms:
            return "its command line does not confirm config %s (%s) and no loaded systemd unit vouches for it" % (
                expected_config,
                "a relative -c %s" % seen if seen else "no -c, or a custom process title",
            )
    if (
        started_since_boot is not None
        and pidfile_since_boot is not None
        and started_since_boot > pidfile_since_boot + proc.START_SLACK
    ):
        return "it started %.1f s after the pidfile was written (the PID was reused)" % (
            started_since_boot - pidfile_since_boot
        )
    return None


def judge_child(fact, master, unit):
    """Why a process is not one the verified `master` forked and may be signalled as its own, or None: a child of
    the master, inside the unit's cgroup (under a unit), running as the master's uid."""
    if fact is None:
        return "it is not running"
    if fact["pid"] == master["pid"]:
        return "it is the old master itself"
    if fact["ppid"] != master["pid"]:
        return "it is not a child of master %d (its parent is %d)" % (master["pid"], fact["ppid"])
    if unit and unit.get("checked") and not in_cgroup(fact.get("cgroup"), unit.get("control_group")):
        return "it is outside unit %s's cgroup %s (its cgroup is %s)" % (
            unit.get("name"),
            unit.get("control_group"),
            fact.get("cgroup"),
        )
    if fact.get("uid") != master.get("uid"):
        return "it runs as uid %s, not the master's uid %s" % (fact.get("uid"), master.get("uid"))
    return None


def judge_new_master(fact, master, unit, exes):
    """Why a process is not the second master the verified `master` forked for a USR2 upgrade, or None.

    `exes` are the interpreters a release runs: the old master's own, and the release venvs' pythons.
    """
    reason = judge_child(fact, master, unit)
    if reason:
        return reason
    if not fact.get("exe") or fact["exe"] not in exes:
        return "it runs %s, not the release's interpreter (%s)" % (fact.get("exe"), ", ".join(sorted(exes)))
    if not proc.classify_cmdline(fact.get("argv") or [])["flavour"]:
        return "its command line is not gunicorn's: %s" % " ".join(fact.get("argv") or [])[:300]
    return None


def judge_worker(fact, master, unit):
    """Why a process is not a worker of the verified `master`, or None."""
    return judge_child(fact, master, unit)


def judge_same(fact, known):
    """Why a process is no longer the one checked before (`known`), or None."""
    if fact is None:
        return "it is not running"
    if not same_process(fact, known):
        return "PID %d now belongs to another process (started at tick %s, not %s)" % (
            known["pid"],
            fact["starttime"],
            known["starttime"],
        )
    return None


# ---------------------------------------------------------------------------------------------------------------
# The one way to signal
# ---------------------------------------------------------------------------------------------------------------


def _pidfd_open(pid):
    """A pidfd for PID; None when the kernel or Python has none; raises ProcessLookupError when PID is gone."""
    opener = getattr(os, "pidfd_open", None)
    if opener is None or not hasattr(signal, "pidfd_send_signal"):
        return None
    try:
        return opener(pid)
    except ProcessLookupError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EINVAL, errno.EPERM):
            return None
        raise


class Handle:
    """A process whose identity was checked; signals reach it and nothing else (see the module docstring)."""

    def __init__(self, pid, fd, fact, what):
        self.pid = pid
        self.fd = fd
        self.fact = fact
        self.what = what

    def send(self, signame):
        """Send a signal by name; True when delivered, False when the checked process is gone."""
        signum = getattr(signal, signame)
        if self.fd is not None:
            try:
                signal.pidfd_send_signal(self.fd, signum)
                return True
            except ProcessLookupError:
                return False
        # No pidfd: re-check right before the kill that the PID is still the checked process.
        if judge_same(facts(self.pid), self.fact) is not None:
            return False
        try:
            os.kill(self.pid, signum)
            return True
        except ProcessLookupError:
            return False

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_checked(pid, judge, what):
    """A Handle on PID once `judge(facts)` accepts it; None when PID is gone; raises Refused with the reason.

    `what` names the process in a refusal ("new master", "worker of master 12", ...).
    """
    try:
        fd = _pidfd_open(pid)
    except ProcessLookupError:
        return None
    try:
        fact = facts(pid)
        if fact is None:
            raise ProcessLookupError(pid)
        reason = judge(fact)
        if reason:
            raise Refused("refused to signal PID %d as the %s: %s" % (pid, what, reason))
        if fd is not None:
            # Still alive after the check: the facts were read from the process the pidfd holds.
            signal.pidfd_send_signal(fd, 0)
    except ProcessLookupError:
        if fd is not None:
            os.close(fd)
        return None
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise
    return Handle(pid, fd, fact, what)


def send_signal(pid, signame, judge, what):
    """Check PID with `judge`, then signal it; True when delivered, False when gone; raises Refused."""
    handle = open_checked(pid, judge, what)
    if handle is None:
        return False
    with handle:
        return handle.send(signame)


# ---------------------------------------------------------------------------------------------------------------
# Root-owned files and paths
# ---------------------------------------------------------------------------------------------------------------


def judge_root_file(st, path):
    """Why a file's lstat result makes it untrusted (not a regular file owned by root, or writable by others)."""
    if not stat_mod.S_ISREG(st.st_mode):
        return "%s is not a regular file" % path
    if st.st_uid != 0:
        return "%s is owned by uid %d, not root" % (path, st.st_uid)
    if st.st_mode & 0o022:
        return "%s is group- or world-writable (mode %04o)" % (path, stat_mod.S_IMODE(st.st_mode))
    return None


def judge_path(path, lstat=os.lstat, strict_from=None):
    """Why a path is not safe for root to act on, or None.

    Every component is checked with lstat: none may be a symlink; every directory must be owned by root and not
    writable by group or others, except ancestors above `strict_from` that are root-owned sticky directories
    (like /tmp), where others cannot replace root's entries. The last component is not checked here.
    """
    if not path or not os.path.isabs(path):
        return "%r is not an absolute path" % path
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return "%s has . or .. components" % path
    current = "/"
    dirs = ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts) - 1)]
    for current in dirs:
        try:
            st = lstat(current)
        except OSError as exc:
            return "%s cannot be read: %s" % (current, exc.strerror)
        if stat_mod.S_ISLNK(st.st_mode):
            return "%s has a symlink component: %s" % (path, current)
        if not stat_mod.S_ISDIR(st.st_mode):
            return "%s is not a directory" % current
        if st.st_uid != 0:
            return "%s is owned by uid %d, not root" % (current, st.st_uid)
        strict = strict_from is not None and (current + "/").startswith(strict_from.rstrip("/") + "/")
        if st.st_mode & 0o022 and (strict or not st.st_mode & stat_mod.S_ISVTX):
            return "%s is group- or world-writable (mode %04o)" % (current, stat_mod.S_IMODE(st.st_mode))
    return None


def read_manifest(path, lstat=os.lstat):
    """(manifest dict or None, problem or None). A manifest that exists must be root's and not writable by others,
    in a directory that passes judge_path; a missing one is (None, None)."""
    if not path:
        return None, None
    try:
        st = lstat(path)
    except OSError:
        return None, None
    reason = judge_root_file(st, path) or judge_path(path, lstat)
    if reason:
        return None, "instance manifest not trusted: %s" % reason
    import json

    try:
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags)
        with os.fdopen(fd) as handle:
            data = json.load(handle)
    except (OSError, ValueError) as exc:
        return None, "instance manifest %s cannot be read: %s" % (path, exc)
    return (data if isinstance(data, dict) else None), None


def release_name_of(cwd, releases_dir):
    """The release name a master's working directory names: <releases_dir>/<name>[/...] gives <name>, else None."""
    if not cwd or not releases_dir:
        return None
    base = releases_dir.rstrip("/") + "/"
    if not cwd.startswith(base):
        return None
    name = cwd[len(base) :].split("/", 1)[0]
    return name if RELEASE_NAME_RE.fullmatch(name) else None


def judge_release_target(releases_dir, name, lstat=os.lstat):
    """Why releases_dir/name is not a release to point `current` at, or None: a real root-owned directory
    directly under a releases tree whose every component passes judge_path."""
    if not name or not RELEASE_NAME_RE.fullmatch(name):
        return "release name %r is not a plain directory name" % (name,)
    target = os.path.join(releases_dir, name)
    reason = judge_path(target, lstat, strict_from=os.path.dirname(releases_dir))
    if reason:
        return reason
    try:
        st = lstat(target)
    except OSError as exc:
        return "%s cannot be read: %s" % (target, exc.strerror)
    if stat_mod.S_ISLNK(st.st_mode):
        return "%s is a symlink, not a release directory" % target
    if not stat_mod.S_ISDIR(st.st_mode):
        return "%s is not a directory" % target
    if st.st_uid != 0 or st.st_mode & 0o022:
        return "%s is not root's or is writable by others" % target
    return None


def judge_link(link, lstat=os.lstat):
    """Why `link` is not a `current` link root may swap, or None: a symlink in a root-owned directory."""
    reason = judge_path(link, lstat, strict_from=os.path.dirname(link))
    if reason:
        return reason
    try:
        st = lstat(link)
    except OSError as exc:
        return "%s cannot be read: %s" % (link, exc.strerror)
    if not stat_mod.S_ISLNK(st.st_mode):
        return "%s is not a symlink" % link
    return None


def swap_current(link, releases_dir, name):
    """Point `link` at releases_dir/name atomically (a symlink under a temporary name, renamed over the link).

    Returns the previous target. Raises Refused when the link or the target fails its checks.
    """
    reason = judge_link(link) or judge_release_target(releases_dir, name)
    if reason:
        raise Refused(reason)
    target = os.path.join(releases_dir, name)
    previous = os.readlink(link)
    tmp = os.path.join(os.path.dirname(link), ".%s.swap.%d" % (os.path.basename(link), os.getpid()))
    try:
        if stat_mod.S_ISLNK(os.lstat(tmp).st_mode):
            os.unlink(tmp)
    except OSError:
        pass
    os.symlink(target, tmp)
    try:
        os.rename(tmp, link)
    except OSError:
        os.unlink(tmp)
        raise
    return previous


def remove_second_pidfile(pidfile, alive):
    """Remove a stale <pidfile>.2: only a regular file (lstat, never a link) in the pidfile's own directory, and
    only when `alive(pid)` says the PID it names is gone. Returns a note or None."""
    if not pidfile:
        return None
    path = pidfile + ".2"
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if not stat_mod.S_ISREG(st.st_mode):
        return "left %s alone: it is not a regular file" % path
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        with os.fdopen(fd) as handle:
            pid = proc.parse_pidfile(handle.read(64))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if pid and alive(pid):
        return None
    try:
        os.unlink(path)
    except OSError:
        return None
    return "removed stale %s (PID %s is gone)" % (path, pid)


# ---------------------------------------------------------------------------------------------------------------
# The verified master of one module run
# ---------------------------------------------------------------------------------------------------------------


def release_interpreters(releases_dir, lstat=os.lstat):
    """Real paths of the release venvs' pythons under a root-owned releases tree (what a new master may run)."""
    found = set()
    if not releases_dir or judge_path(os.path.join(releases_dir, "x"), lstat) is not None:
        return found
    try:
        names = os.listdir(releases_dir)
    except OSError:
        return found
    for name in names:
        if not RELEASE_NAME_RE.fullmatch(name):
            continue
        python = os.path.join(releases_dir, name, "venv", "bin", "python")
        if judge_path(python, lstat) is None and os.path.exists(python):
            found.add(os.path.realpath(python))
    return found


class Identity:
    """The master a module run acts on, checked once, and the checks every later PID must pass.

    Built by locate_master. `master` is the old master's facts; `new_master` those of a second master once one
    was accepted. Signals go through signal_master / signal_new_master / open_worker only.
    """

    def __init__(self, master, unit, exes, notes):
        self.master = master
        self.unit = unit
        self.exes = set(exes)
        self.notes = notes
        self.new_master = None

    @property
    def pid(self):
        return self.master["pid"]

    # -- judges (PID -> reason or None) ------------------------------------------------------------------------
    def judge_new_pid(self, pid):
        """Why PID is not (or no longer) the second master of this upgrade, or None."""
        fact = facts(pid)
        if self.new_master is not None and pid == self.new_master["pid"]:
            return judge_same(fact, self.new_master)
        return judge_new_master(fact, self.master, self.unit, self.exes)

    def accept_new_master(self, pid):
        """Record PID as the second master when it passes judge_new_master; returns the refusal reason or None."""
        if self.new_master is not None and pid == self.new_master["pid"]:
            return judge_same(facts(pid), self.new_master)
        fact = facts(pid)
        reason = judge_new_master(fact, self.master, self.unit, self.exes)
        if reason is None:
            self.new_master = fact
        return reason

    # -- signals ------------------------------------------------------------------------------------------------
    def signal_master(self, signame):
        """Signal the verified master; True when delivered, False when it is gone. Raises Refused."""
        return send_signal(self.pid, signame, lambda fact: judge_same(fact, self.master), "master")

    def signal_new_master(self, signame):
        if self.new_master is None:
            raise Refused("no second master was accepted: not sending %s" % signame)
        pid = self.new_master["pid"]
        return send_signal(pid, signame, lambda fact: judge_same(fact, self.new_master), "new master")

    def open_master(self):
        """A Handle on the verified master (for signals that must follow each other closely)."""
        return open_checked(self.pid, lambda fact: judge_same(fact, self.master), "master")

    def open_worker(self, pid, master=None):
        """A Handle on a worker of `master` (facts; the old master by default), or None when gone. Raises Refused."""
        master = master or self.master
        return open_checked(
            pid, lambda fact: judge_worker(fact, master, self.unit), "worker of master %d" % master["pid"]
        )


def locate_master(pidfile, expected_config, unit, releases_dir=None, expected_uid=None):
    """The verified master of an instance as an Identity; raises Refused (a DiscoveryError) with the reason.

    Under a loaded unit, the master is the unit's MainPID, and a pidfile naming another PID is a refusal. Without
    one (no systemd, no unit given), it is the pidfile's PID.
    """
    notes = []
    pid = mtime = None
    if pidfile:
        pid, mtime = proc.read_pidfile(pidfile)
        if pid is None and mtime is not None:
            raise Refused("pidfile %s holds no PID" % pidfile)
    source = "pidfile"
    if unit.get("checked"):
        main_pid = unit.get("main_pid")
        if not main_pid:
            raise Refused(
                "unit %s is loaded but has no main process (ActiveState=%s): no master to act on"
                % (unit.get("name"), unit.get("active_state"))
            )
        if pid is not None and pid != main_pid:
            raise Refused(
                "pidfile %s names PID %d but unit %s's MainPID is %d: refusing to act on either "
                "(the pidfile's directory is writable by the service user)" % (pidfile, pid, unit.get("name"), main_pid)
            )
        if pid is None:
            notes.append("no pidfile at %s: using the unit's MainPID %d" % (pidfile, main_pid))
        pid, source = main_pid, ("pidfile" if pid else "unit")
    else:
        notes.append("unit checks skipped: %s" % unit.get("reason"))
        if pid is None:
            if pidfile:
                raise Refused("no gunicorn master: pidfile %s does not exist and no unit MainPID" % pidfile)
            raise Refused("no gunicorn master: no pidfile and no unit MainPID")
    fact = facts(pid)
    described = (
        "PID %d named by pidfile %s" % (pid, pidfile) if source == "pidfile" else "PID %d, the unit's MainPID," % pid
    )
    if fact is None:
        raise Refused("stale pidfile %s: PID %d is not running" % (pidfile, pid))
    reason = judge_master(
        fact,
        unit,
        expected_config=expected_config,
        pidfile_since_boot=proc.to_since_boot(mtime) if (mtime and source == "pidfile") else None,
        started_since_boot=fact["starttime"] / float(proc.CLOCK_TICKS),
        expected_uid=expected_uid,
    )
    if reason:
        raise Refused("%s is not the gunicorn master for this instance: %s" % (described, reason))
    if not expected_config:
        notes.append("no config given: the master's config was not checked")
    exes = {fact["exe"]} if fact["exe"] else set()
    exes |= release_interpreters(releases_dir)
    return Identity(fact, unit, exes, notes)
