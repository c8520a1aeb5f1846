# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The operation core the acting modules share: preflight, the verified master, phase and signal recording,
health waits and check-mode results.

A module is its observations and a table of actions on top of this. Every signal goes through
Operation.signal (the verified master) or gunicorn_trust (a checked handle); trust decisions live in
gunicorn_trust, planning in upgrade_plan/refresh_plan.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_channel as channel
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_common as common
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_health as health
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_proc as proc
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_trust as trust

HEALTH_INTERVAL = 0.5


class Operation:
    """One module run: phases, signals sent, health checks and notes, for the result."""

    def __init__(self, module, probe, identity=None, operation="operation"):
        self.module = module
        self.identity = identity
        self.operation = operation
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
        """Signal the verified master (the only PID these modules signal by number); fails the module on a refusal."""
        try:
            if self.identity is None or pid != self.identity.pid:
                raise trust.Refused("refused to signal PID %s: it is not the verified master" % pid)
            delivered = self.identity.signal_master(signame)
        except trust.Refused as exc:
            self.refused(str(exc))
        self.record(pid, signame, delivered)
        return delivered

    def record(self, pid, signame, delivered):
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

    def refused(self, reason):
        """Fail the module at once: a PID failed its identity check and was not signalled."""
        self.leave(False, reason)
        self.module.fail_json(
            msg="%s failed in phase %s: %s" % (self.operation, self.phase, reason),
            changed=self.changed(),
            failed_phase=self.phase,
            phases=self.phases.items,
            signals=self.signals_result(),
            health=self.health_result(),
            duration=self.duration(),
            notes=self.notes,
        )

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


def preflight(module, operation, extra_checks=None, refusal_result=None):
    """Validate the options, find and verify the master, refuse what fails a trust check; fails the module before
    any signal on a problem.

    `extra_checks(params)` returns the module's own option problems; `refusal_result(found)` returns keys to add
    to a refusal's result (`found` holds only what was found so far). Returns dict(operation, target, probe, pid,
    unit, notes, before, flavour, status, phases, identity, refusal_result, params).
    """
    params, probe = common.checked_options(module, extra_checks)
    target = common.resolve_target(params)
    phases = common.Phases()
    phases.start("preflight")
    try:
        identity = common.locate_master(target, params)
    except proc.DiscoveryError as exc:
        phases.end(False, str(exc))
        extra = refusal_result({}) if refusal_result else {}
        module.fail_json(msg=str(exc), changed=False, failed_phase="preflight", phases=phases.items, **extra)
    pid, unit, notes = identity.pid, identity.unit, identity.notes
    before = proc.snapshot(pid, target["pidfile"], params["worker_ready_seconds"], identity.judge_new_pid)
    flavour = common.flavour_of(before, params["arbiter"], (unit or {}).get("exec_start"))
    status = channel.status(target["control_socket"], pid) if flavour == "graceful" else None
    found = dict(
        operation=operation,
        target=target,
        probe=probe,
        pid=pid,
        unit=unit,
        notes=notes,
        before=before,
        flavour=flavour,
        status=status,
        phases=phases,
        identity=identity,
        refusal_result=refusal_result,
        params=params,
    )
    refusal = common.second_master_refusal(before, pid) or common.channel_refusal(status, identity)
    if refusal:
        refuse(module, found, refusal)
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


def wait_until_ready(module, found, observe):
    """Wait until every worker of the master has run its main loop (`observe()` returns the workers); refuses
    after the timeout. Workers still booting would be taken for new ones, or import whatever `current` holds."""
    deadline = time.time() + found["params"]["timeout"]
    workers = found["before"]["workers"]
    while not all(w["ready"] for w in workers):
        if time.time() >= deadline:
            refuse(
                module,
                found,
                "master %d has workers that are not ready: %s"
                % (found["pid"], [w["pid"] for w in workers if not w["ready"]]),
            )
        time.sleep(0.2)
        workers = observe()
    found["before"] = dict(found["before"], workers=workers)
    return workers


def refuse(module, found, msg):
    """Fail the module in preflight, before any signal, with what was found."""
    found["phases"].end(False, msg)
    result = dict(
        changed=False,
        failed_phase="preflight",
        phases=found["phases"].items,
        master=found["pid"],
        flavour=found["flavour"],
        unit=found["unit"],
        notes=found["notes"],
    )
    if found.get("refusal_result"):
        result.update(found["refusal_result"](found))
    module.fail_json(msg=msg, **result)


def check_mode_exit(module, found, msg, **result):
    """End a check-mode run after preflight: nothing was signalled."""
    found["phases"].end(True, "check mode")
    module.exit_json(changed=True, msg=msg, signals=[], **result)
