#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: gunicorn_refresh
short_description: Replace every gunicorn worker now, a batch at a time, never below the worker count
version_added: 0.1.0
description:
  - Rolling refresh of a running master's workers without reloading its configuration, for example to pick up new
    code (without C(preload_app)) or to return memory, while the app keeps serving at full capacity.
  - With the bundled C(graceful-gunicorn) arbiter, sends C(graceful refresh) over its status channel and polls
    C(refresh.last) until the refresh that covers the request has succeeded or failed. The arbiter boots
    C(worker_refresh_batch_size) new workers at a time and retires an old one only as a new one reports ready; a
    new worker that cannot boot aborts the refresh and the old workers keep serving; the module then fails naming
    the phase and the arbiter's reason.
  - With stock gunicorn, per batch of O(batch_size) workers, sends C(SIGTTIN) once per worker (each after the
    previous one forked a worker), waits until every new worker has run its main loop (its heartbeat) for
    O(worker_ready_seconds), then sends C(SIGTTOU) once per worker, each after the previous retiree has exited
    (gunicorn retires its oldest worker, an original one). The worker count never drops below what it was.
  - With stock gunicorn, a new worker that is not ready within O(timeout) is taken out again and the module fails
    naming the phase. C(SIGTTOU) alone would retire the oldest worker, so the master is held with C(SIGSTOP) for
    the few milliseconds it takes to C(SIGKILL) the stuck worker and queue C(SIGTTOU), then continued, so it reaps the
    stuck worker before it handles C(SIGTTOU) and retires nobody. New workers of the batch that did get ready stay
    (each replaces an original one).
  - With stock gunicorn, a new worker that B(fails) to boot (an import error, exit code 3) halts the whole master,
    old workers included. Use the bundled arbiter where new code may not import.
  - Then checks health when a health target is configured.
author:
  - graceful.gunicorn maintainers (@graceful-gunicorn)
extends_documentation_fragment:
  - graceful.gunicorn.gunicorn
options:
  batch_size:
    description:
      - Workers replaced at a time with stock gunicorn (that many extra workers run during each batch).
      - With the bundled arbiter the batch size is its C(worker_refresh_batch_size) setting; a different value here
        is reported in a warning and not applied.
      - Defaults to V(1) with stock gunicorn.
    type: int
attributes:
  check_mode:
    description: Can run in check mode and report what would change without changing it.
    support: full
    details: Finds and checks the master and reports the batches it would run, without signalling.
  diff_mode:
    description: Returns no diff.
    support: none
notes:
  - O(timeout) bounds each waiting phase; with the bundled arbiter the whole refresh is one phase. When the arbiter's
    refresh is still running at the deadline the module fails, and the arbiter carries on (it fails a worker that is
    not ready after its C(worker_boot_timeout)).
  - O(workers), when set, must equal the number of workers the master runs; the refresh keeps that number.
seealso:
  - module: graceful.gunicorn.gunicorn_reload
  - module: graceful.gunicorn.gunicorn_upgrade
  - module: graceful.gunicorn.gunicorn_info
"""

EXAMPLES = r"""
- name: Replace every worker of the instance, one at a time
  graceful.gunicorn.gunicorn_refresh:
    instance: shop
    health_url: http://127.0.0.1:8000

- name: Refresh a stock gunicorn two workers at a time, failing if a new worker is not ready within 60 s
  graceful.gunicorn.gunicorn_refresh:
    pidfile: /run/app/gunicorn.pid
    arbiter: stock
    batch_size: 2
    timeout: 60
  register: refresh

- name: Show how many workers were replaced
  ansible.builtin.debug:
    msg: "{{ refresh.replaced }} workers replaced in {{ refresh.duration }} s"
"""

RETURN = r"""
flavour:
  description: The master that was driven, V(graceful) (bundled arbiter) or V(stock).
  returned: always
  type: str
  sample: stock
master:
  description: PID of the master.
  returned: always
  type: int
  sample: 4242
old_workers:
  description: PIDs of the workers before the refresh.
  returned: always
  type: list
  elements: int
  sample: [4250, 4251]
new_workers:
  description: PIDs of the workers when the module ended.
  returned: always
  type: list
  elements: int
  sample: [4310, 4311]
replaced:
  description: How many of the old workers are gone.
  returned: always
  type: int
  sample: 2
batch_size:
  description: The batch size used (with the bundled arbiter, its C(worker_refresh_batch_size)).
  returned: always
  type: int
  sample: 1
batches:
  description: With stock gunicorn, the planned batch sizes; with the bundled arbiter, empty.
  returned: always
  type: list
  elements: int
  sample: [1, 1]
request_id:
  description: With the bundled arbiter, the id of the refresh request; null otherwise.
  returned: always
  type: int
  sample: 3
refresh:
  description: With the bundled arbiter, its C(refresh.last) record of the refresh that covered the request.
  returned: always
  type: dict
  sample: {"id": 2, "trigger": "manual", "request_id": 3, "outcome": "succeeded", "replaced": 2, "error": null}
last_boot_failure:
  description: With the bundled arbiter, its last worker boot failure when it happened during this refresh.
  returned: always
  type: dict
  sample: {"pid": 4312, "reason": "not ready: status 500", "at": 1700000001.0, "outcome": "abort-refresh"}
rolled_back:
  description: With stock gunicorn, whether new workers that never got ready were taken out again.
  returned: always
  type: bool
  sample: false
phases:
  description:
    - Phases in order, each with its name, start and end (epoch seconds), duration, outcome and a detail.
    - Stock gunicorn, per batch (the detail names it), V(grow), V(new_ready), V(retire); after a failure
      V(rollback); then V(health). The bundled arbiter V(request), V(refresh), V(health). First V(preflight).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "new_ready", "started": 1700000000.1, "ended": 1700000001.3, "duration": 1.2, "ok": true,
            "detail": "batch 1/2: 1 of 1 new workers ready"}]
signals:
  description: Every signal sent, with its target PID, phase, time and whether it was delivered.
  returned: always
  type: list
  elements: dict
  sample: [{"signal": "SIGTTIN", "pid": 4242, "phase": "grow", "at": 1700000000.1, "delivered": true}]
failed_phase:
  description: The phase that failed, or null.
  returned: always
  type: str
  sample: new_ready
health:
  description: The health target and the health phase's number of requests, failures and last result.
  returned: always
  type: dict
  sample: {"target": "http://127.0.0.1:8000/health", "checks": []}
unit:
  description: The systemd unit and whether it was checked.
  returned: always
  type: dict
  sample: {"name": null, "checked": false, "reason": "no unit given", "active_state": null, "main_pid": null,
           "load_state": null}
duration:
  description: Seconds the whole refresh took.
  returned: always
  type: float
  sample: 6.2
notes:
  description: Observations worth reading (skipped checks, fallbacks).
  returned: always
  type: list
  elements: str
  sample: []
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_channel as channel
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_common as common
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_operation as operation
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_recycle as recycle
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_stuck_worker as stuck
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_trust as trust
from ansible_collections.graceful.gunicorn.plugins.module_utils import refresh_plan as plan


class Refresh:
    def __init__(self, module, found):
        self.module = module
        self.params = module.params
        self.found = found
        self.pid = found["pid"]
        self.target = found["target"]
        self.run = operation.Operation(module, found["probe"], found["identity"], "refresh")
        self.run.notes = found["notes"]
        self.run.phases.items.extend(found["phases"].items)
        self.old_pids = common.pids(found["before"]["workers"])
        self.workers = found["before"]["workers"]
        self.result = dict(
            flavour=found["flavour"],
            master=self.pid,
            old_workers=self.old_pids,
            new_workers=self.old_pids,
            replaced=0,
            batch_size=None,
            batches=[],
            request_id=None,
            refresh=None,
            last_boot_failure=None,
            rolled_back=False,
            failed_phase=None,
            unit=found["unit"],
            notes=self.run.notes,
        )

    def update_workers(self, workers):
        self.workers = workers
        self.result["new_workers"] = common.pids(workers)
        self.result["replaced"] = len(set(self.old_pids) - set(self.result["new_workers"]))

    def finish(self, failed_phase=None, reason=None):
        run = self.run
        common_keys = dict(
            phases=run.phases.items,
            signals=run.signals_result(),
            health=run.health_result(),
            duration=run.duration(),
        )
        common_keys.update(self.result)
        if failed_phase:
            common_keys["failed_phase"] = failed_phase
            self.module.fail_json(
                msg="refresh failed in phase %s: %s%s"
                % (
                    failed_phase,
                    reason,
                    "; the new workers that never got ready were taken out again" if self.result["rolled_back"] else "",
                ),
                changed=run.changed(),
                **common_keys,
            )
        self.module.exit_json(
            changed=True,
            msg="refreshed master %d: %d workers replaced in %.1f s"
            % (self.pid, self.result["replaced"], run.duration()),
            **common_keys,
        )

    # -- stock gunicorn: TTIN, ready, TTOU -----------------------------------------------------------------------
    def stock(self, sizes):
        run, params = self.run, self.params
        expected = len(self.old_pids)
        targets = set(self.old_pids)
        failure = None
        index = 0
        state = plan.StockRefreshState(expected_workers=expected, health_configured=run.probe is not None)

        def start_batch():
            known = set(common.pids(self.workers))
            left = len(targets & known)
            state.update(phase="grow", batch=min(sizes[0] if sizes else 1, left), ttin_sent=0, ttou_sent=0)
            run.enter("grow", "batch %d/%d" % (index + 1, len(sizes)))
            return known

        known = start_batch()
        while True:
            alive, workers, _status = recycle.observe(self.pid, self.target, params, False, self.found["identity"], run)
            if alive:
                self.update_workers(workers)
            new = [w for w in workers if w["pid"] not in known]
            state.update(
                master_alive=alive,
                batch_new=new,
                workers=len(workers),
                targets_left=len(targets & set(common.pids(workers))),
                deadline_passed=run.deadline_passed(),
            )
            label = "batch %d/%d" % (index + 1, len(sizes))
            if state.phase == "health":
                state.health_ok, detail = run.health_phase()
            step = plan.stock_refresh_step(state)
            kind = step["action"]
            if kind == "wait":
                time.sleep(recycle.POLL)
            elif kind == "ttin":
                state.ttin_sent += 1
                run.signal(self.pid, "SIGTTIN")
            elif kind == "ttou":
                state.ttou_sent += 1
                run.signal(self.pid, "SIGTTOU")
            elif kind == "advance":
                run.leave(True, self.describe(state, label))
                state.phase = step["phase"]
                run.enter(step["phase"], label if step["phase"] != "health" else "")
            elif kind == "next_batch":
                run.leave(True, self.describe(state, label))
                index += 1
                sizes = sizes[1:]
                known = start_batch()
            elif kind == "rollback":
                failure = (step["phase"], step["reason"])
                run.leave(False, "%s: %s" % (label, step["reason"]))
                state.update(phase="rollback", ttou_sent=0)
                run.enter("rollback", "%s, after %s failed" % (label, step["phase"]))
            elif kind == "remove_stuck":
                try:
                    forked = stuck.remove_stuck_worker(run, self.found["identity"], int(step["reason"]))
                except trust.Refused as exc:
                    run.refused(str(exc))
                self.result["rolled_back"] = True
                if forked:
                    # The master handled SIGCHLD and SIGTTOU in two turns: it forked and retired an original worker.
                    run.leave(False, "the master forked %s while the stuck worker was taken out" % forked)
                    return self.finish(
                        failure[0], "%s; then the rollback raced the master, which forked %s" % (failure[1], forked)
                    )
            elif kind == "rolled_back":
                run.leave(True, "%d workers, %d of them new and ready" % (len(workers), len(new)))
                return self.finish(failure[0], failure[1])
            elif kind == "fail":
                run.leave(False, step["reason"])
                if failure:
                    return self.finish(failure[0], "%s; then the rollback failed: %s" % (failure[1], step["reason"]))
                return self.finish(step["phase"], step["reason"])
            elif kind == "done":
                run.leave(True, detail)
                return self.finish()

    @staticmethod
    def describe(state, label):
        new = state.batch_new or []
        if state.phase == "grow":
            return "%s: %d new workers forked" % (label, len(new))
        if state.phase == "new_ready":
            return "%s: %d of %d new workers ready" % (label, sum(1 for w in new if w["ready"]), state.batch)
        if state.phase == "retire":
            return "%s: %d workers retired, %d original workers left" % (
                label,
                state.ttou_sent,
                state.targets_left,
            )
        return label

    # -- bundled arbiter: graceful refresh -----------------------------------------------------------------------
    def graceful(self):
        run, params = self.run, self.params
        status = self.found["status"]
        started = time.time()
        state = plan.GracefulRefreshState(phase="request", health_configured=run.probe is not None)
        run.enter("request")
        detail = ""
        while True:
            alive, workers, status = recycle.observe(self.pid, self.target, params, True, self.found["identity"], run)
            if alive:
                self.update_workers(workers)
            last = ((status or {}).get("refresh") or {}).get("last")
            failure = (status or {}).get("last_boot_failure")
            failure = failure if failure and (failure.get("at") or 0) >= started - 0.5 else None
            state.update(
                master_alive=alive,
                old_left=len(set(self.old_pids) & set(common.pids(workers))),
                last=last,
                boot_failure=(failure or {}).get("reason"),
                deadline_passed=run.deadline_passed(),
            )
            self.result["last_boot_failure"] = failure
            if state.phase == "health":
                state.health_ok, detail = run.health_phase()
            step = plan.graceful_refresh_step(state)
            kind = step["action"]
            if kind == "wait":
                time.sleep(recycle.POLL)
            elif kind == "request":
                try:
                    reply = channel.refresh(self.target["control_socket"], self.pid)
                except channel.ChannelError as exc:
                    run.leave(False, str(exc))
                    return self.finish("request", "the arbiter did not take the refresh request: %s" % exc)
                state.request_id = reply.get("request_id") or 0
                self.result["request_id"] = state.request_id
                run.signals.append(
                    {
                        "signal": "graceful refresh",
                        "pid": self.pid,
                        "phase": "request",
                        "at": round(time.time(), 3),
                        "delivered": bool(reply.get("accepted")),
                        "phase_index": len(run.phases.items) - 1,
                    }
                )
            elif kind == "advance":
                if state.phase == "refresh":
                    self.result["refresh"] = last
                    detail = "refresh %s %s: %s workers replaced" % (
                        last.get("id"),
                        last.get("outcome"),
                        last.get("replaced"),
                    )
                else:
                    detail = "request %s" % state.request_id
                run.leave(True, detail)
                state.phase = step["phase"]
                run.enter(step["phase"])
            elif kind == "fail":
                if state.phase == "refresh" and last and (last.get("request_id") or 0) >= state.request_id:
                    self.result["refresh"] = last
                run.leave(False, step["reason"])
                return self.finish(step["phase"], step["reason"])
            elif kind == "done":
                run.leave(True, detail)
                return self.finish()


def refresh_option_problems(params):
    if params["batch_size"] is not None and params["batch_size"] < 1:
        return ["batch_size must be at least 1"]
    return []


def main():
    argument_spec = common.common_argument_spec()
    argument_spec.update(batch_size=dict(type="int"))
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=common.COMMON_MUTUALLY_EXCLUSIVE,
        required_one_of=common.COMMON_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    params = module.params
    found = operation.preflight(module, "refresh", refresh_option_problems)
    refresh = Refresh(module, found)
    before, pid, flavour, status = found["before"], found["pid"], found["flavour"], found["status"]
    count = len(before["workers"])
    if params["workers"] and params["workers"] != count:
        operation.refuse(module, found, "master %d runs %d workers, not %d (workers)" % (pid, count, params["workers"]))
    if flavour == "graceful" and status is None:
        operation.refuse(
            module,
            found,
            "master %d is the bundled arbiter but its channel (control_socket %s) is not reachable: it refreshes only "
            "through it" % (pid, found["target"]["control_socket"]),
        )
    if flavour == "graceful":
        batch_size = (status.get("config") or {}).get("worker_refresh_batch_size") or 1
        if params["batch_size"] and params["batch_size"] != batch_size:
            module.warn(
                "the bundled arbiter refreshes %d workers at a time (its worker_refresh_batch_size); batch_size %d "
                "is not applied" % (batch_size, params["batch_size"])
            )
        sizes = []
        what = "send 'graceful refresh' to the bundled arbiter of master %d and wait for it" % pid
    else:
        batch_size = params["batch_size"] or 1
        sizes = plan.batches(count, batch_size)
        what = "replace the %d workers of master %d in batches of %s with SIGTTIN/SIGTTOU" % (count, pid, sizes)
        # A booting worker would be taken for a new one: start from a fleet that has run its main loop.
        refresh.workers = operation.wait_until_ready(
            module, found, lambda: recycle.observe(pid, found["target"], params, False, found["identity"])[1]
        )
    refresh.result.update(batch_size=batch_size, batches=sizes)
    if module.check_mode:
        operation.check_mode_exit(
            module,
            found,
            "would %s" % what,
            phases=refresh.run.phases.items,
            health=refresh.run.health_result(),
            duration=refresh.run.duration(),
            **refresh.result,
        )
    found["phases"].end(True, "master %d (%s) with %d workers" % (pid, flavour, count))
    if flavour == "graceful":
        refresh.graceful()
    else:
        refresh.stock(sizes)


if __name__ == "__main__":
    main()
