# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The binary upgrade's decisions, as a pure function of what was observed.

`next_action(state)` looks at one observation of the old and new masters and returns what to do next. It never
touches a process: the module observes, asks, acts and observes again. The state is an UpgradeState:

phase             current phase (FORWARD_PHASES, then ROLLBACK_PHASES after a failure)
flavour           'graceful' (bundled arbiter: WINCH drains) or 'stock' (TTOU drains to one worker)
on_failure        'rollback' or 'leave'
expected_workers  how many ready workers a generation needs
old_initial       how many workers the old master had before the upgrade
old_alive, old_workers, old_ready      the old master and its workers
new_pid, new_alive, new_workers, new_ready   the new master (new_pid None until seen)
health_configured, health_ok   health_ok is True/False once decided for this phase, None while undecided
deadline_passed   this phase's deadline has passed
bake_done         bake_seconds have elapsed in the bake phase
sent              signals already sent in this phase ('usr2', 'winch', 'term_old', 'hup_old', 'term_new', ...)
ttou_sent         TTOUs sent so far to the old master (stock drain)
drained           the old master's workers were drained (WINCH or TTOU) before the failure
pidfile_pid, second_pidfile_pid, unit_checked, unit_active, main_pid   promotion evidence
refused           a PID offered as the second master (by <pidfile>.2) that failed its identity check: the
                  message naming it; fails any forward phase (never signalled)
spawn_failed      the bundled arbiter reported that its re-exec failed: the message; fails the spawn once
spawn_quiet       no new master has shown up in /proc for a while after USR2 (a report alone is not believed
                  while a child of the old master may still appear)
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import dataclasses
from typing import Optional, Set


@dataclasses.dataclass
class UpgradeState:
    """One observation of both masters and what was done so far; the fields are described in the module docstring."""

    phase: str = "spawn"
    flavour: str = "stock"
    on_failure: str = "rollback"
    expected_workers: int = 1
    old_initial: int = 1
    old_alive: bool = False
    old_workers: int = 0
    old_ready: int = 0
    new_pid: Optional[int] = None
    new_alive: bool = False
    new_workers: int = 0
    new_ready: int = 0
    health_configured: bool = False
    health_ok: Optional[bool] = None
    deadline_passed: bool = False
    bake_done: bool = False
    sent: Set[str] = dataclasses.field(default_factory=set)
    ttou_sent: int = 0
    drained: bool = False
    pidfile_pid: Optional[int] = None
    second_pidfile_pid: Optional[int] = None
    unit_checked: bool = False
    unit_active: bool = False
    main_pid: Optional[int] = None
    refused: Optional[str] = None
    spawn_failed: Optional[str] = None
    spawn_quiet: bool = False

    def update(self, **observed):
        """Set observed fields; an unknown name is a programming error, not a new field."""
        for name, value in observed.items():
            if name not in self.__dataclass_fields__:
                raise AttributeError("UpgradeState has no field %r" % name)
            setattr(self, name, value)


FORWARD_PHASES = ("spawn", "new_ready", "health_new", "drain_old", "bake", "retire_old", "promote")
ROLLBACK_PHASES = ("rollback_restore", "rollback_stop_new", "rollback_verify")
# Until the old master is told to exit, it can take the traffic back.
ROLLBACKABLE = ("spawn", "new_ready", "health_new", "drain_old", "bake")


def action(kind, phase=None, reason=""):
    return {"action": kind, "phase": phase, "reason": reason}


def _failure(state, phase, reason):
    if state.on_failure == "rollback" and phase in ROLLBACKABLE and state.old_alive:
        return action("rollback", phase, reason)
    return action("fail", phase, reason)


def next_action(state):
    """The next step of a binary upgrade; see the module docstring for the state's keys.

    Actions: wait, advance (to `phase`), usr2, winch_old, ttou_old, term_old, rollback (failed `phase`, start
    rolling back), rollback_hup_old, term_new, kill_new, fail (`phase`, `reason`), rolled_back, done.
    """
    phase = state.phase
    if phase in ROLLBACK_PHASES:
        return _rollback(state)
    if phase not in FORWARD_PHASES:
        raise ValueError("unknown phase %r" % phase)
    sent = state.sent

    if phase in ROLLBACKABLE and not state.old_alive:
        return action("fail", phase, "the old master exited during the upgrade")
    if state.refused:
        return _failure(state, phase, state.refused)

    if phase == "spawn":
        if "usr2" not in sent:
            return action("usr2")
        if state.new_pid and state.new_alive:
            return action("advance", "new_ready")
        if state.spawn_failed and state.spawn_quiet:
            return _failure(state, phase, state.spawn_failed)
        if state.new_pid:
            return _failure(state, phase, "the new master %s exited right after starting" % state.new_pid)
        if state.deadline_passed:
            return _failure(state, phase, "no new master appeared after USR2 (did it fail at startup? see its log)")
        return action("wait")

    new_desc = "the new master %s" % state.new_pid
    if not state.new_alive:
        if phase == "new_ready":
            return _failure(state, phase, "%s exited before its workers were ready (did they fail to boot?)" % new_desc)
        return _failure(state, phase, "%s exited" % new_desc)

    if phase == "new_ready":
        expected = state.expected_workers or 1
        workers, ready = state.new_workers, state.new_ready
        if workers >= expected and ready >= expected and ready == workers:
            return action("advance", "health_new")
        if state.deadline_passed:
            return _failure(
                state, phase, "%d of %d new workers ready before the deadline (%d running)" % (ready, expected, workers)
            )
        return action("wait")

    if phase == "health_new":
        if not state.health_configured or state.health_ok:
            return action("advance", "drain_old")
        if state.health_ok is False:
            return _failure(state, phase, "health check failed with both generations serving")
        if state.deadline_passed:
            return _failure(state, phase, "health check not passing before the deadline")
        return action("wait")

    if phase == "drain_old":
        target = 0 if state.flavour == "graceful" else 1
        old_workers = state.old_workers
        if state.flavour == "graceful":
            if "winch" not in sent:
                return action("winch_old")
        else:
            # Stock gunicorn ignores WINCH unless daemonized: TTOU one worker at a time, down to one.
            ttou_sent, initial = state.ttou_sent, state.old_initial
            if ttou_sent < initial - 1 and old_workers > target and old_workers <= initial - ttou_sent:
                return action("ttou_old")
        if old_workers <= target:
            return action("advance", "bake")
        if state.deadline_passed:
            return _failure(state, phase, "old workers still running after the drain deadline (%d left)" % old_workers)
        return action("wait")

    if phase == "bake":
        if state.health_ok is False:
            return _failure(state, phase, "health check failed while the new generation served alone")
        if state.bake_done:
            return action("advance", "retire_old")
        return action("wait")

    if phase == "retire_old":
        if "term_old" not in sent:
            return action("term_old")
        if not state.old_alive:
            return action("advance", "promote")
        if state.deadline_passed:
            return action("fail", phase, "the old master did not exit after TERM")
        return action("wait")

    # promote
    problems = _promotion_problems(state)
    if not problems:
        return action("done")
    if state.deadline_passed:
        return action("fail", phase, "; ".join(problems))
    return action("wait")


def _promotion_problems(state):
    new_pid = state.new_pid
    problems = []
    if state.old_alive:
        problems.append("the old master is still running")
    if state.second_pidfile_pid == new_pid:
        problems.append("the new master has not promoted itself yet (its <pidfile>.2 is still there)")
    if state.pidfile_pid != new_pid:
        problems.append("the pidfile names %s, not the new master %s" % (state.pidfile_pid, new_pid))
    if state.unit_checked:
        if not state.unit_active:
            problems.append("the unit is no longer active")
        if state.main_pid != new_pid:
            problems.append("the unit's MainPID is %s, not the new master %s" % (state.main_pid, new_pid))
    return problems


def _rollback(state):
    phase = state.phase
    sent = state.sent
    if not state.old_alive:
        return action("fail", phase, "the old master is gone: nothing to roll back to")

    if phase == "rollback_restore":
        if not state.drained:
            return action("advance", "rollback_stop_new")
        if "hup_old" not in sent:
            return action("rollback_hup_old")
        expected = state.old_initial or state.expected_workers or 1
        workers, ready = state.old_workers, state.old_ready
        if ready >= expected and ready == workers:
            return action("advance", "rollback_stop_new")
        if state.deadline_passed:
            return action(
                "fail", phase, "the old master's workers did not come back (%d of %d ready)" % (ready, expected)
            )
        return action("wait")

    if phase == "rollback_stop_new":
        if not (state.new_pid and state.new_alive):
            return action("advance", "rollback_verify")
        if "term_new" not in sent:
            return action("term_new")
        if state.deadline_passed and "kill_new" not in sent:
            return action("kill_new")
        return action("wait")

    # rollback_verify
    if not state.health_configured or state.health_ok:
        return action("rolled_back")
    if state.health_ok is False or state.deadline_passed:
        return action("fail", phase, "the old master is not healthy after the rollback")
    return action("wait")
