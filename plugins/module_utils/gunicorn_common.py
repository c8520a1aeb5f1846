# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What the graceful.gunicorn modules share: options, the target's paths, systemd, phases and signals."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import pwd
import re
import subprocess
import time

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_health as health
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_proc as proc
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_trust as trust


def common_argument_spec():
    """Options documented by the graceful.gunicorn.gunicorn doc fragment."""
    return dict(
        instance=dict(type="str"),
        pidfile=dict(type="path"),
        unit=dict(type="str"),
        config=dict(type="path"),
        arbiter=dict(type="str", default="auto", choices=["auto", "graceful", "stock"]),
        control_socket=dict(type="path"),
        health_url=dict(type="str"),
        health_socket=dict(type="path"),
        health_path=dict(type="str"),
        url_prefix=dict(type="str"),
        host_header=dict(type="str"),
        expected_status=dict(type="list", elements="int"),
        body_pattern=dict(type="str"),
        validate_certs=dict(type="bool", default=True),
        ca_path=dict(type="path"),
        health_timeout=dict(type="float", default=5.0),
        health_checks=dict(type="int", default=3),
        timeout=dict(type="float", default=120.0),
        worker_ready_seconds=dict(type="float", default=1.0),
        workers=dict(type="int"),
    )


COMMON_MUTUALLY_EXCLUSIVE = [("health_url", "health_socket")]
COMMON_REQUIRED_ONE_OF = [("instance", "pidfile", "unit")]


def resolve_target(params):
    """The pidfile, unit, config and control socket to use, from `instance` and the explicit options."""
    instance = params.get("instance")
    target = {
        "instance": instance,
        "pidfile": params.get("pidfile"),
        "unit": params.get("unit"),
        "config": params.get("config"),
        "control_socket": params.get("control_socket"),
    }
    if instance:
        if not target["pidfile"]:
            target["pidfile"] = "/run/gunicorn-%s/master.pid" % instance
        if not target["unit"]:
            target["unit"] = "gunicorn-%s.service" % instance
        if not target["config"]:
            target["config"] = "/etc/gunicorn/%s/gunicorn.conf.py" % instance
        if not target["control_socket"]:
            target["control_socket"] = "/run/gunicorn-%s/gunicorn.ctl" % instance
    return target


HEALTH_DEFAULTS = {"health_path": "/health", "url_prefix": "", "expected_status": [200]}


def manifest_path(params):
    """Where the role's instance manifest lies: beside the config, /etc/gunicorn/<instance>/instance.json."""
    if params.get("config"):
        return os.path.join(os.path.dirname(params["config"]), "instance.json")
    if params.get("instance"):
        return "/etc/gunicorn/%s/instance.json" % params["instance"]
    return None


def read_manifest(path):
    """The manifest as a dict, or None when it is missing, unreadable or not trusted (see instance_manifest)."""
    return trust.read_manifest(path)[0]


def instance_manifest(params):
    """(manifest or None, problem or None): a manifest that exists must be root's and writable by root only."""
    return trust.read_manifest(manifest_path(params))


def apply_manifest(params, manifest):
    """Fill the options left unset from the instance manifest, then the built-in defaults; returns params.

    Explicit options always win. The health target is taken only when neither health_url nor health_socket
    was given, and only when the role enabled health checks for the instance.
    """
    manifest = manifest or {}
    health = manifest.get("health") or {}
    if not params.get("health_url") and not params.get("health_socket") and health.get("enabled"):
        if health.get("socket"):
            params["health_socket"] = health["socket"]
        elif health.get("url"):
            params["health_url"] = health["url"]
    for key, manifest_key in (
        ("health_path", "path"),
        ("url_prefix", "url_prefix"),
        ("expected_status", "expected_status"),
    ):
        if params.get(key) is None:
            value = health.get(manifest_key)
            params[key] = value if value is not None else HEALTH_DEFAULTS[key]
    if params.get("workers") is None and isinstance(manifest.get("workers"), int) and manifest["workers"] > 0:
        params["workers"] = manifest["workers"]
    for key in ("unit", "pidfile", "control_socket"):
        if not params.get(key) and params.get("instance") and manifest.get(key):
            params[key] = manifest[key]
    return params


def load_params(params):
    """The module's options completed from the instance manifest (see apply_manifest)."""
    return apply_manifest(params, read_manifest(manifest_path(params)))


def checked_options(module, extra_checks=None):
    """The module's options, completed from the instance manifest, and its health probe (or None).

    Fails the module, before any signal is sent, listing every problem: the common options', those
    `extra_checks(params)` returns, an untrusted manifest, and a health target that cannot work.
    """
    problems = validate_params(module.params)
    manifest, manifest_problem = (None, None) if problems else instance_manifest(module.params)
    if manifest_problem:
        problems.append(manifest_problem)
    params = apply_manifest(module.params, manifest)
    if manifest and not problems:
        # Root wrote it, but what it fills in reaches paths and probes like an option: the same checks apply.
        problems += ["from the instance manifest %s: %s" % (manifest_path(params), p) for p in validate_params(params)]
    if not problems:
        problems += list(extra_checks(params) if extra_checks else [])
    probe = None
    if not problems:
        try:
            probe = health.build_probe(params)
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        module.fail_json(msg="invalid options: %s" % "; ".join(problems), changed=False)
    return params, probe


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
PATH_OPTIONS = ("pidfile", "config", "control_socket", "health_socket", "ca_path", "release_link")


def path_problem(key, value):
    """A problem with an option that names a path, or None: absolute, no control characters, no . or .."""
    if value is None:
        return None
    parts = value.split("/")
    if not value.startswith("/") or _CONTROL.search(value) or any(p in (".", "..") for p in parts) or len(value) > 4096:
        return "%s must be an absolute path without control characters or .. components, got %r" % (key, value)
    return None


def validate_params(params):
    """Problems with the options that no signal must be sent with; returns a list of messages."""
    problems = []
    instance = params.get("instance")
    if instance is not None and not trust.INSTANCE_RE.fullmatch(instance):
        problems.append(
            "instance must match \\A[a-z0-9][a-z0-9_-]{0,39}\\Z (lowercase letters, digits, _ and -), got %r" % instance
        )
    unit = params.get("unit")
    if unit is not None and not trust.UNIT_RE.fullmatch(unit):
        problems.append("unit must be a systemd service name like gunicorn-<instance>.service, got %r" % unit)
    for key in PATH_OPTIONS:
        problem = path_problem(key, params.get(key))
        if problem:
            problems.append(problem)
    for key in ("health_url", "health_path", "url_prefix", "host_header"):
        value = params.get(key)
        if value is not None and (_CONTROL.search(value) or " " in value or len(value) > 2048):
            problems.append("%s must not contain spaces or control characters, got %r" % (key, value))
    for key in ("timeout", "health_timeout"):
        if params.get(key) is not None and params[key] <= 0:
            problems.append("%s must be positive" % key)
    for key in ("health_checks", "workers"):
        if params.get(key) is not None and params[key] < 1:
            problems.append("%s must be at least 1" % key)
    if params.get("worker_ready_seconds") is not None and params["worker_ready_seconds"] < 0:
        problems.append("worker_ready_seconds must not be negative")
    for status in params.get("expected_status") or []:
        if not 100 <= status <= 599:
            problems.append("expected_status %d is not an HTTP status" % status)
    if (
        params.get("ca_path")
        and not path_problem("ca_path", params["ca_path"])
        and not os.path.exists(params["ca_path"])
    ):
        problems.append("ca_path %s does not exist" % params["ca_path"])
    return problems


# ---------------------------------------------------------------------------------------------------------------
# systemd
# ---------------------------------------------------------------------------------------------------------------


def parse_systemctl_show(text):
    """`systemctl show -p A -p B UNIT` output as a dict."""
    props = {}
    for line in (text or "").splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def exec_start_program(value):
    """The program of a unit's first ExecStart, from `systemctl show -p ExecStart` ("{ path=/x ; argv[]=... }")."""
    match = re.search(r"\bpath=([^ ;]+)", value or "")
    return match.group(1) if match else None


def unit_state(unit, systemctl=None):
    """{'name', 'checked', 'reason', 'active_state', 'main_pid', 'load_state'} for a unit.

    `checked` is False (with the reason) when there is no unit, no systemctl, or the unit is not loaded: callers
    then skip unit checks and say so in their result.
    """
    state = {
        "name": unit,
        "checked": False,
        "reason": None,
        "active_state": None,
        "main_pid": None,
        "load_state": None,
        "control_group": None,
        "exec_start": None,
    }
    if not unit:
        state["reason"] = "no unit given"
        return state
    systemctl = systemctl or _which("systemctl")
    if not systemctl or not os.path.isdir("/run/systemd/system"):
        state["reason"] = "systemd is not running on this host"
        return state
    try:
        out = subprocess.run(
            [
                systemctl,
                "show",
                "-p",
                "LoadState",
                "-p",
                "ActiveState",
                "-p",
                "MainPID",
                "-p",
                "ControlGroup",
                "-p",
                "ExecStart",
                "--",
                unit,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            timeout=15,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        state["reason"] = "systemctl failed: %s" % exc
        return state
    props = parse_systemctl_show(out.stdout.decode("utf-8", "replace"))
    state["load_state"] = props.get("LoadState")
    if out.returncode != 0 or props.get("LoadState") in (None, "not-found"):
        state["reason"] = "unit %s is not loaded" % unit
        return state
    state["checked"] = True
    state["active_state"] = props.get("ActiveState")
    state["control_group"] = props.get("ControlGroup") or None
    state["exec_start"] = exec_start_program(props.get("ExecStart"))
    try:
        state["main_pid"] = int(props.get("MainPID") or 0) or None
    except ValueError:
        state["main_pid"] = None
    return state


def _which(name):
    for directory in [*os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep), "/usr/bin", "/bin"]:
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


# ---------------------------------------------------------------------------------------------------------------
# Phases, signals, the master
# ---------------------------------------------------------------------------------------------------------------


class Phases:
    """Records phases as {name, started, ended, duration, ok, detail} with epoch timestamps."""

    def __init__(self):
        self.items = []
        self.current = None

    def start(self, name, detail=""):
        if self.current is not None:
            self.end(True)
        self.current = {
            "name": name,
            "started": round(time.time(), 3),
            "ended": None,
            "duration": None,
            "ok": None,
            "detail": detail,
        }
        self.items.append(self.current)
        return self.current

    def end(self, ok, detail=None):
        if self.current is None:
            return
        self.current["ended"] = round(time.time(), 3)
        self.current["duration"] = round(self.current["ended"] - self.current["started"], 3)
        self.current["ok"] = bool(ok)
        if detail is not None:
            self.current["detail"] = detail
        self.current = None

    def skip(self, name, detail):
        now = round(time.time(), 3)
        self.items.append(
            {"name": name, "started": now, "ended": now, "duration": 0.0, "ok": True, "detail": "skipped: %s" % detail}
        )


def releases_dir(params, manifest=None):
    """The instance's releases tree: <manifest root>/releases from a trusted manifest, else None."""
    manifest = manifest if manifest is not None else read_manifest(manifest_path(params))
    root = (manifest or {}).get("root")
    if isinstance(root, str) and not path_problem("root", root):
        return os.path.join(root, "releases")
    return None


def service_uid(params, manifest=None):
    """The UID of the instance's service user named by a trusted manifest, or None (no manifest, no such user)."""
    manifest = manifest if manifest is not None else read_manifest(manifest_path(params))
    user = (manifest or {}).get("user")
    if not isinstance(user, str) or not trust.USER_RE.fullmatch(user):
        return None
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


def locate_master(target, params):
    """Find and verify the master; returns a gunicorn_trust.Identity. Raises proc.DiscoveryError (trust.Refused).

    `identity.pid`, `identity.unit` and `identity.notes` are what callers report.
    """
    unit = unit_state(target["unit"])
    manifest = read_manifest(manifest_path(params))
    return trust.locate_master(
        target["pidfile"],
        target["config"],
        unit,
        releases_dir(params, manifest),
        expected_uid=service_uid(params, manifest),
    )


def channel_refusal(status, identity, master=None):
    """A refusal message when the control socket reports, as a worker of `master` (facts; the verified master by
    default), a running PID that is not one; None otherwise. The socket lies in a directory the service user
    owns: a reply naming a live stranger is a lie, and a PID that has exited since the reply is no evidence."""
    master = master or identity.master
    for worker in (status or {}).get("workers") or []:
        pid = worker.get("pid") if isinstance(worker, dict) else None
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            continue
        fact = trust.facts(pid)
        if fact is None:
            continue
        reason = trust.judge_worker(fact, master, identity.unit)
        if reason:
            return "refused the control socket's report of PID %d as a worker of master %d: %s" % (
                pid,
                master["pid"],
                reason,
            )
    return None


def second_master_refusal(snap, old_pid):
    """A refusal message for the first PID a snapshot refused as a second master, or None."""
    for item in snap.get("refused") or []:
        if item["pid"] is None:
            return "refused %s: %s" % (item["source"], item["reason"])
        return "refused PID %d named by %s as the second master of master %d: %s" % (
            item["pid"],
            item["source"],
            old_pid,
            item["reason"],
        )
    return None


def flavour_of(snapshot, requested, unit_program=None):
    """'graceful' or 'stock': as requested, or detected from the master's command line.

    A process title (setproctitle, which apps such as Airflow install) replaces the command line with
    "gunicorn: master [name]": the flavour is then "unknown", and the program its unit starts decides
    (`unit_program`, the unit's ExecStart: root-owned, unlike the title or the control socket).
    """
    if requested in ("graceful", "stock"):
        return requested
    flavour = (snapshot.get("master") or {}).get("flavour")
    if flavour == "unknown" and unit_program:
        flavour = proc.classify_cmdline([unit_program])["flavour"]
    return "graceful" if flavour == "graceful" else "stock"


def pids(workers):
    return sorted(w["pid"] for w in workers)


def total_memory(snapshot):
    """Sum of RSS and PSS over the master, its workers and any second master with its workers."""
    procs = [snapshot.get("master"), snapshot.get("new_master")]
    procs += snapshot.get("workers") or []
    procs += snapshot.get("new_workers") or []
    rss = sum((p.get("rss") or 0) for p in procs if p)
    pss_values = [p.get("pss") for p in procs if p]
    pss = sum(pss_values) if pss_values and None not in pss_values else None
    return {"rss": rss, "pss": pss}
