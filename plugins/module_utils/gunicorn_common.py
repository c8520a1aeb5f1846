# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What the graceful.gunicorn modules share: options, the target's paths, systemd, phases and signals."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import signal
import subprocess
import time

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_health as health
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_proc as proc


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
    """The manifest as a dict, or None when it is missing or unreadable (the options then stand alone)."""
    if not path:
        return None
    try:
        with open(path) as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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
    `extra_checks(params)` returns, and a health target that cannot work.
    """
    params = load_params(module.params)
    problems = validate_params(params) + list(extra_checks(params) if extra_checks else [])
    try:
        probe = health.build_probe(params)
    except ValueError as exc:
        problems.append(str(exc))
        probe = None
    if problems:
        module.fail_json(msg="invalid options: %s" % "; ".join(problems), changed=False)
    return params, probe


def validate_params(params):
    """Problems with the options that no signal must be sent with; returns a list of messages."""
    problems = []
    instance = params.get("instance")
    if instance is not None and (not instance or "/" in instance or instance.startswith(".")):
        problems.append("instance must be a plain name, got %r" % instance)
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
    if params.get("ca_path") and not os.path.exists(params["ca_path"]):
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


def unit_state(unit, systemctl=None):
    """{'name', 'checked', 'reason', 'active_state', 'main_pid', 'load_state'} for a unit.

    `checked` is False (with the reason) when there is no unit, no systemctl, or the unit is not loaded: callers
    then skip unit checks and say so in their result.
    """
    state = {"name": unit, "checked": False, "reason": None, "active_state": None, "main_pid": None, "load_state": None}
    if not unit:
        state["reason"] = "no unit given"
        return state
    systemctl = systemctl or _which("systemctl")
    if not systemctl or not os.path.isdir("/run/systemd/system"):
        state["reason"] = "systemd is not running on this host"
        return state
    try:
        out = subprocess.run(
            [systemctl, "show", "-p", "LoadState", "-p", "ActiveState", "-p", "MainPID", "--", unit],
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


def send_signal(pid, signame):
    """Send a signal by name; returns True when delivered, False when the process is gone."""
    try:
        os.kill(pid, getattr(signal, signame))
        return True
    except ProcessLookupError:
        return False


def locate_master(target, params):
    """Find and identify the master; returns (pid, unit_state, notes). Raises proc.DiscoveryError."""
    unit = unit_state(target["unit"])
    pid, _source, notes = proc.find_master_pid(
        target["pidfile"], expected_config=target["config"], main_pid=unit["main_pid"] if unit["checked"] else None
    )
    if not unit["checked"]:
        notes.append("unit checks skipped: %s" % unit["reason"])
    return pid, unit, notes


def flavour_of(snapshot, requested):
    """'graceful' or 'stock': as requested, or detected from the master's command line."""
    if requested in ("graceful", "stock"):
        return requested
    flavour = (snapshot.get("master") or {}).get("flavour")
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
