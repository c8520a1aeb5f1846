# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What gunicorn_reload and gunicorn_refresh share at run time: preflight, observation, signals, health phase.

Decisions live in refresh_plan; discovery in gunicorn_proc; the probe in gunicorn_health; this only glues them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import re
import signal
import time

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_channel as channel
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_common as common
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_health as health
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_proc as proc

POLL = 0.1
HEALTH_INTERVAL = 0.5
_PRELOAD_LINE = re.compile(r"^\s*preload_app\s*=\s*(True|1)\b", re.MULTILINE)


def preload_of(status, argv, config_text):
    """Whether the master preloads the app: from the arbiter's status, else --preload or the config file.

    None when it cannot be told (stock gunicorn with a config file computing the value).
    """
    if status is not None:
        return bool((status.get("config") or {}).get("preload_app"))
    if "--preload" in (argv or ()):
        return True
    if config_text is None:
        return None
    if _PRELOAD_LINE.search(config_text):
        return True
    if re.search(r"^\s*preload_app\s*=", config_text, re.MULTILINE):
        return None if not re.search(r"^\s*preload_app\s*=\s*(False|0)\b", config_text, re.MULTILINE) else False
    return False


class Run:
    """One module run: phases, signals sent, health checks and notes, for the result."""

    def __init__(self, module, probe):
        self.module = module
        self.params = module.params
        self.probe = probe
        self.phases = common.Phases()
        self.phase = None
        self.signals = []
        self.health_checks = []
        self.notes = []
        self.warnings = []
        self.started = time.time()
        self.deadline = None

    def enter(self, phase, detail="", timeout=None):
        self.phase = phase
        self.deadline = time.time() + (timeout or self.params["timeout"])
        self.phases.start(phase, detail)

    def leave(self, ok, detail=""):
        sent = [
            "%s to %d" % (s["signal"], s["pid"])
            for s in self.signals
            if s.get("phase_index") == len(self.phases.items) - 1
        ]
        if sent and self.phases.current is not None:
            detail = "%s%s%s" % (", ".join(sent), "; " if detail else "", detail)
        self.phases.end(ok, detail)

    def deadline_passed(self):
        return time.time() >= self.deadline

    def signal(self, pid, signame):
        delivered = common.send_signal(pid, signame)
        self.signals.append(
            {
                "signal": signame,
                "pid": pid,
                "phase": self.phase,
                "at": round(time.time(), 3),
                "delivered": delivered,
                "phase_index": len(self.phases.items) - 1,
            }
        )
        return delivered

    def signals_result(self):
        return [{k: v for k, v in s.items() if k != "phase_index"} for s in self.signals]

    def changed(self):
        return any(s["delivered"] for s in self.signals)

    def duration(self):
        return round(time.time() - self.started, 3)

    def health_phase(self):
        """Wait for health_checks consecutive successes; returns (ok, reason). Skipped without a probe."""
        if self.probe is None:
            return True, "no health check configured"
        ok, summary = health.wait_healthy(
            self.probe, self.params["health_checks"], self.deadline, HEALTH_INTERVAL, max_failures=None
        )
        check = dict(summary, phase=self.phase)
        self.health_checks.append(check)
        detail = "%d health requests, %d failed" % (summary["attempts"], summary["failures"])
        if not ok:
            detail += "; last: %s" % ((summary["last"] or {}).get("detail"))
        return ok, detail

    def health_result(self):
        return {"target": health.describe(self.probe), "checks": self.health_checks}


def preflight(module, problems):
    """Validate the options, find and identify the master; fails the module before any signal on a problem.

    Returns dict(target, probe, pid, unit, notes, before, flavour, status, phases).
    """
    params, probe = common.checked_options(module, lambda _params: problems)
    target = common.resolve_target(params)
    phases = common.Phases()
    phases.start("preflight")
    try:
        pid, unit, notes = common.locate_master(target, params)
    except proc.DiscoveryError as exc:
        phases.end(False, str(exc))
        module.fail_json(msg=str(exc), changed=False, failed_phase="preflight", phases=phases.items)
    before = proc.snapshot(pid, target["pidfile"], params["worker_ready_seconds"])
    flavour = common.flavour_of(before, params["arbiter"])
    status = channel.status(target["control_socket"], pid) if flavour == "graceful" else None
    found = dict(
        target=target,
        probe=probe,
        pid=pid,
        unit=unit,
        notes=notes,
        before=before,
        flavour=flavour,
        status=status,
        phases=phases,
    )
    if flavour == "graceful" and status is None:
        notes.append(
            "the bundled arbiter's channel is not reachable (control_socket %s): readiness from /proc only"
            % target["control_socket"]
        )
    if before["new_master"]:
        refuse(
            module,
            found,
            "a binary upgrade is in flight: master %d has a second master %d" % (pid, before["new_master"]["pid"]),
        )
    if not before["workers"]:
        refuse(module, found, "master %d has no workers" % pid)
    return found


def refuse(module, found, msg):
    found["phases"].end(False, msg)
    module.fail_json(
        msg=msg,
        changed=False,
        failed_phase="preflight",
        phases=found["phases"].items,
        master=found["pid"],
        flavour=found["flavour"],
        unit=found["unit"],
        notes=found["notes"],
    )


def observe(pid, target, params, use_channel):
    """(master alive, workers [{pid, ready, ...}], arbiter status or None) of a master now."""
    if not proc.alive(pid):
        return False, [], None
    snap = proc.snapshot(pid, target["pidfile"], params["worker_ready_seconds"])
    workers = snap["workers"]
    status = channel.status(target["control_socket"], pid, timeout=2.0, memory=False) if use_channel else None
    if status is not None:
        states = dict((w["pid"], w.get("state")) for w in status.get("workers") or [])
        workers = [dict(w, ready=bool(w["ready"] and states.get(w["pid"]) == "ready")) for w in workers]
    return proc.alive(pid), workers, status


def read_text(path, limit=1024 * 1024):
    try:
        with open(path) as handle:
            return handle.read(limit)
    except (IOError, OSError, UnicodeDecodeError):
        return None


def remove_stuck_worker(run, master, worker, wait=5.0):
    """Take a new worker that never got ready out of a stock master without retiring an old one for it.

    SIGTTOU alone would make gunicorn SIGTERM its *oldest* worker, and a killed worker alone is replaced at once.
    So the master is held (SIGSTOP) while the worker is SIGKILLed (it stays a zombie, its SIGCHLD pending), then
    continued and sent SIGTTOU right away (a stop signal queued before SIGCONT would be discarded by it). Both are
    pending when the master resumes and run in signal-number order: SIGCHLD (17, the dead worker is reaped) before
    SIGTTOU (22, the count drops to the workers left), in one turn of its loop, so it neither forks nor retires
    anyone. The master is always continued. Returns the master's children that appeared meanwhile (none expected).
    """
    before = set(proc.children_by_parent().get(master, []))
    run.signal(master, "SIGSTOP")
    try:
        deadline = time.time() + wait
        while (proc.stat(master) or {}).get("state") not in ("T", "t", None) and time.time() < deadline:
            time.sleep(0.001)
        run.signal(worker, "SIGKILL")
        while proc.alive(worker) and time.time() < deadline:
            time.sleep(0.001)
    finally:
        _continue_then_ttou(run, master)
    deadline = time.time() + wait
    while os.path.exists("/proc/%d" % worker) and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    return sorted(set(proc.children_by_parent().get(master, [])) - before - {worker})


def _continue_then_ttou(run, master):
    """SIGCONT and SIGTTOU back to back, from a CPU other than the master's, so SIGTTOU is pending before it runs."""
    affinity = None
    try:
        affinity = os.sched_getaffinity(0)
        cpu = int(proc._read("/proc/%d/stat" % master).rsplit(")", 1)[1].split()[36])
        others = affinity - {cpu}
        if others:
            os.sched_setaffinity(0, others)
    except (AttributeError, OSError, ValueError, IndexError, TypeError):
        affinity = None
    cont = ttou = False
    try:
        os.kill(master, signal.SIGCONT)
        cont = True
        os.kill(master, signal.SIGTTOU)
        ttou = True
    except OSError:
        pass
    finally:
        if affinity:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, affinity)
    now = round(time.time(), 3)
    for name, delivered in (("SIGCONT", cont), ("SIGTTOU", ttou)):
        run.signals.append(
            {
                "signal": name,
                "pid": master,
                "phase": run.phase,
                "at": now,
                "delivered": delivered,
                "phase_index": len(run.phases.items) - 1,
            }
        )
