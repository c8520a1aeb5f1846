# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Decisions of gunicorn_reload and gunicorn_refresh, as pure functions of what was observed.

The modules observe the master (through /proc and, with the bundled arbiter, its status channel), ask one of the
`*_step` functions what to do, do it and observe again. Nothing here touches a process. Every step returns
{'action', 'phase', 'reason'} (see `action`). Each step function takes its own state dataclass (ReloadState,
StockRefreshState, GracefulRefreshState), with the fields below.

reload_step(state): HUP, then wait for a whole new generation, then health.
  phase             'hup', 'new_ready', 'health'
  sent              signals sent in this phase ('hup')
  master_alive      the master is still running
  flavour           'graceful' or 'stock'
  channel           the bundled arbiter's status was read (the refresh/reload keys below are meaningful)
  reload            the arbiter's `last_reload` recorded after our HUP, or None
  refresh           the arbiter's refresh started by our HUP (`refresh.current` or `refresh.last`), or None
  boot_failure      the arbiter's `last_boot_failure` reason after our HUP, or None
  expected_workers  how many workers the new generation must have
  old_pids          worker PIDs before the HUP
  workers           [{'pid', 'ready'}] now (retiring workers included: a generation is complete once they left)
  health_configured, health_ok (True/False decided, None undecided), deadline_passed

stock_refresh_step(state): TTIN/TTOU rolling refresh of stock gunicorn, one batch at a time.
  phase             'grow', 'new_ready', 'retire', 'rollback', 'health'
  master_alive, expected_workers
  targets_left      original workers still running (not yet retired)
  batch             size of the current batch
  ttin_sent, ttou_sent   signals sent in this batch (one at a time: equal signals pending at once merge)
  batch_new         [{'pid', 'ready'}] workers forked during this batch
  workers           how many workers run now (retiring ones included)
  health_configured, health_ok, deadline_passed

graceful_refresh_step(state): `graceful refresh` through the arbiter's channel.
  phase             'request', 'refresh', 'health'
  request_id        the id the arbiter gave our request, or None before it was sent
  last              `refresh.last` of the status, or None
  old_left          workers from before the refresh still running (retired ones finishing their requests)
  master_alive, health_configured, health_ok, deadline_passed
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


import dataclasses
from typing import Any, Dict, List, Optional, Set


class _Observed:
    def update(self, **observed):
        """Set observed fields; an unknown name is a programming error, not a new field."""
        for name, value in observed.items():
            if name not in self.__dataclass_fields__:
                raise AttributeError("%s has no field %r" % (type(self).__name__, name))
            setattr(self, name, value)


@dataclasses.dataclass
class ReloadState(_Observed):
    phase: str = "hup"
    flavour: str = "stock"
    channel: bool = False
    master_alive: bool = False
    expected_workers: int = 1
    old_pids: List[int] = dataclasses.field(default_factory=list)
    workers: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    reload: Optional[Dict[str, Any]] = None
    refresh: Optional[Dict[str, Any]] = None
    boot_failure: Optional[str] = None
    health_configured: bool = False
    health_ok: Optional[bool] = None
    deadline_passed: bool = False
    sent: Set[str] = dataclasses.field(default_factory=set)


@dataclasses.dataclass
class StockRefreshState(_Observed):
    phase: str = "grow"
    master_alive: bool = False
    expected_workers: int = 1
    targets_left: int = 0
    batch: int = 0
    ttin_sent: int = 0
    ttou_sent: int = 0
    batch_new: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    workers: int = 0
    health_configured: bool = False
    health_ok: Optional[bool] = None
    deadline_passed: bool = False


@dataclasses.dataclass
class GracefulRefreshState(_Observed):
    phase: str = "request"
    master_alive: bool = False
    request_id: Optional[int] = None
    last: Optional[Dict[str, Any]] = None
    old_left: int = 0
    boot_failure: Optional[str] = None
    health_configured: bool = False
    health_ok: Optional[bool] = None
    deadline_passed: bool = False


def action(kind, phase=None, reason=""):
    return {"action": kind, "phase": phase, "reason": reason}


def batches(targets, batch_size):
    """Sizes of the batches a rolling refresh of `targets` workers makes: 5, 2 -> [2, 2, 1]."""
    if targets <= 0:
        return []
    batch_size = max(1, batch_size)
    sizes = [batch_size] * (targets // batch_size)
    if targets % batch_size:
        sizes.append(targets % batch_size)
    return sizes


def generation_complete(workers, old_pids, expected):
    """(complete, description): every worker is new, there are `expected` of them and all are ready."""
    old = set(old_pids or ())
    still_old = [w["pid"] for w in workers if w["pid"] in old]
    new = [w for w in workers if w["pid"] not in old]
    ready = sum(1 for w in new if w["ready"])
    description = "%d of %d new workers ready, %d old workers left" % (ready, expected, len(still_old))
    return (not still_old and len(new) == expected and ready == expected), description


def _health(state, done_action):
    if not state.health_configured or state.health_ok:
        return action(done_action)
    if state.health_ok is False:
        return action("fail", "health", "health check failed after the new workers took over")
    if state.deadline_passed:
        return action("fail", "health", "health check not passing before the deadline")
    return action("wait")


# ---------------------------------------------------------------------------------------------------------------
# gunicorn_reload
# ---------------------------------------------------------------------------------------------------------------

STOCK_HALT_HINT = (
    "stock gunicorn halts when a new worker fails to boot (an import error in the new code or configuration); "
    "the bundled graceful-gunicorn arbiter keeps the old workers serving instead"
)


def reload_step(state):
    phase = state.phase
    sent = state.sent
    if phase not in ("hup", "new_ready", "health"):
        raise ValueError("unknown phase %r" % phase)
    if not state.master_alive:
        reason = "the master exited"
        if state.flavour == "stock":
            reason += " (%s)" % STOCK_HALT_HINT
        return action("fail", phase, reason)

    if phase == "hup":
        if "hup" not in sent:
            return action("hup")
        return action("advance", "new_ready")

    if phase == "health":
        return _health(state, "done")

    # new_ready
    reload = state.reload or {}
    if state.channel and reload.get("outcome") == "failed":
        return action(
            "fail",
            "hup",
            "the master rejected the configuration: %s; it keeps the old configuration and workers"
            % reload.get("error"),
        )
    refresh = state.refresh or {}
    if state.channel and refresh.get("outcome") in ("failed", "aborted"):
        reason = "the arbiter %s the refresh: %s" % (
            "aborted" if refresh["outcome"] == "aborted" else "failed",
            refresh.get("error") or "no reason recorded",
        )
        if state.boot_failure and state.boot_failure not in reason:
            reason += " (last boot failure: %s)" % state.boot_failure
        return action("fail", phase, reason + "; the old generation keeps serving")
    complete, description = generation_complete(state.workers or [], state.old_pids, state.expected_workers or 1)
    if complete and (not state.channel or refresh.get("outcome") == "succeeded"):
        return action("advance", "health")
    if state.deadline_passed:
        waiting = description
        if state.channel and not refresh:
            waiting = "the arbiter has not started the refresh (%s)" % description
        return action("fail", phase, "new generation not ready before the deadline: %s" % waiting)
    return action("wait")


# ---------------------------------------------------------------------------------------------------------------
# gunicorn_refresh, stock gunicorn: TTIN, wait ready, TTOU
# ---------------------------------------------------------------------------------------------------------------


def stock_refresh_step(state):
    """Next step of a TTIN/TTOU rolling refresh; the worker count never drops below expected_workers.

    Actions: ttin, ttou, remove_stuck (pid: kill a new worker that never became ready and TTOU, so that gunicorn
    does not retire an old worker for it), wait, advance (phase), next_batch, fail, done.
    """
    phase = state.phase
    if phase not in ("grow", "new_ready", "retire", "rollback", "health"):
        raise ValueError("unknown phase %r" % phase)
    if not state.master_alive:
        return action("fail", phase, "the master exited (%s)" % STOCK_HALT_HINT)
    expected = state.expected_workers or 1
    batch = state.batch or 0
    new = state.batch_new or []
    ready = sum(1 for w in new if w["ready"])
    workers = state.workers

    if phase == "health":
        return _health(state, "done")

    if phase == "grow":
        ttin_sent = state.ttin_sent
        if len(new) < ttin_sent:
            if state.deadline_passed:
                return action("fail", phase, "the master forked no worker after TTIN")
            return action("wait")
        if ttin_sent < batch:
            return action("ttin")
        return action("advance", "new_ready")

    if phase == "new_ready":
        if len(new) >= batch and ready >= batch:
            return action("advance", "retire")
        if state.deadline_passed:
            return action(
                "rollback", phase, "%d of %d new workers ready before the deadline" % (min(ready, batch), batch)
            )
        return action("wait")

    if phase == "retire":
        ttou_sent = state.ttou_sent
        # One TTOU at a time, each once the previous retiree has left: the count is back to expected + the rest.
        settled = workers <= expected + batch - ttou_sent
        if not settled:
            if state.deadline_passed:
                return action("fail", phase, "a retired worker did not exit (%d workers running)" % workers)
            return action("wait")
        if ttou_sent < batch:
            return action("ttou")
        if state.targets_left > 0:
            return action("next_batch")
        return action("advance", "health")

    # rollback: remove the new workers that are not ready, then shrink back to the expected count. New workers that
    # did become ready stay: each TTOU retires the oldest (an original) worker, as a completed batch would.
    stuck = [w["pid"] for w in new if not w["ready"]]
    if stuck:
        return action("remove_stuck", phase, str(stuck[0]))
    ttou_sent = state.ttou_sent
    if workers > expected + len(new) - ttou_sent:
        if state.deadline_passed:
            return action("fail", phase, "%d workers still running after the rollback" % workers)
        return action("wait")
    if ttou_sent < len(new):
        return action("ttou")
    return action("rolled_back")


# ---------------------------------------------------------------------------------------------------------------
# gunicorn_refresh, bundled arbiter: `graceful refresh`
# ---------------------------------------------------------------------------------------------------------------


def graceful_refresh_step(state):
    phase = state.phase
    if phase not in ("request", "refresh", "health"):
        raise ValueError("unknown phase %r" % phase)
    if not state.master_alive:
        return action("fail", phase, "the master exited")
    if phase == "request":
        if state.request_id is None:
            return action("request")
        return action("advance", "refresh")
    if phase == "health":
        return _health(state, "done")
    last = state.last or {}
    request_id = state.request_id or 0
    if last and (last.get("request_id") or 0) >= request_id:
        if last.get("outcome") == "succeeded":
            if state.old_left:
                # Retired workers finish their requests (SIGKILL after graceful_timeout): wait until they are gone.
                if state.deadline_passed:
                    return action("fail", phase, "%d retired workers still running" % state.old_left)
                return action("wait")
            return action("advance", "health")
        reason = "the arbiter's refresh %s %s: %s" % (
            last.get("id"),
            last.get("outcome"),
            last.get("error") or "no reason recorded",
        )
        if state.boot_failure and state.boot_failure not in reason:
            reason += " (last boot failure: %s)" % state.boot_failure
        return action("fail", phase, reason + "; the old workers keep serving")
    if state.deadline_passed:
        return action(
            "fail",
            phase,
            "refresh request %d not finished before the deadline; the arbiter carries on with it "
            "(a new worker that never gets ready fails after worker_boot_timeout)" % request_id,
        )
    return action("wait")
