#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: gunicorn_reload
short_description: Reload a gunicorn master (HUP) and wait until a whole new generation of workers serves
version_added: 0.1.0
description:
  - Sends C(SIGHUP) to the verified master (the PID its pidfile or the unit's C(MainPID) names, checked to be the
    gunicorn master of this instance), which re-reads its configuration and replaces every worker. This is what the
    role's unit runs as C(ExecReload); signalling the checked PID directly works with or without systemd and tells
    exactly which process was reloaded.
  - Then waits until every worker is of the new generation and ready, and the app is healthy. With the bundled
    C(graceful-gunicorn) arbiter, readiness and the outcome come from its status channel (the refresh its HUP
    started, C(last_reload), C(last_boot_failure)); with stock gunicorn, all worker PIDs must differ from the old
    set, their number must be O(workers) (default the number before the reload) and each must have run its main
    loop (heartbeat) for O(worker_ready_seconds).
  - With the bundled arbiter a HUP whose new workers cannot boot (new code that fails to import, a failing health
    path) is aborted by the arbiter, the old generation keeps serving, and this module fails naming the phase and
    the arbiter's recorded reason. A configuration file the master cannot load is kept out the same way.
  - With stock gunicorn, HUP stops the old workers before the new ones are ready, and a new worker that fails to
    boot B(halts the whole master), healthy old workers included. Use the bundled arbiter, or
    M(graceful.gunicorn.gunicorn_upgrade), to deploy code that might not import.
  - With C(preload_app) the master's copy of the app is reused. HUP applies the configuration but does B(not) load
    new code. The module then warns and returns RV(code_reloaded=false); deploy code with
    M(graceful.gunicorn.gunicorn_upgrade).
author:
  - graceful.gunicorn maintainers (@graceful-gunicorn)
extends_documentation_fragment:
  - graceful.gunicorn.gunicorn
attributes:
  check_mode:
    description: Can run in check mode and report what would change without changing it.
    support: full
    details: Finds and checks the master and reports the signal it would send, without sending it.
  diff_mode:
    description: Returns no diff.
    support: none
seealso:
  - module: graceful.gunicorn.gunicorn_refresh
  - module: graceful.gunicorn.gunicorn_upgrade
  - module: graceful.gunicorn.gunicorn_info
"""

EXAMPLES = r"""
- name: Apply a changed gunicorn.conf.py
  graceful.gunicorn.gunicorn_reload:
    instance: shop
    health_url: http://127.0.0.1:8000
  register: reload

- name: Show the workers that replaced the old ones
  ansible.builtin.debug:
    msg: "{{ reload.old_workers }} -> {{ reload.new_workers }} in {{ reload.duration }} s"

- name: Reload a stock gunicorn outside systemd whose new configuration runs 4 workers
  graceful.gunicorn.gunicorn_reload:
    pidfile: /run/app/gunicorn.pid
    arbiter: stock
    workers: 4
    health_socket: /run/app/gunicorn.sock
    timeout: 60
"""

RETURN = r"""
flavour:
  description: The master that was reloaded, V(graceful) (bundled arbiter) or V(stock).
  returned: always
  type: str
  sample: graceful
master:
  description: PID of the master that got C(SIGHUP).
  returned: always
  type: int
  sample: 4242
old_workers:
  description: PIDs of the workers before the reload.
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
phases:
  description:
    - Phases in order, each with its name, start and end (epoch seconds), duration, outcome and a detail.
    - V(preflight), V(hup), V(new_ready), V(health). A configuration the master rejected fails V(hup).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "new_ready", "started": 1700000000.1, "ended": 1700000001.3, "duration": 1.2, "ok": true,
            "detail": "2 of 2 new workers ready, 0 old workers left"}]
signals:
  description: Every signal sent, with its target PID, phase, time and whether it was delivered.
  returned: always
  type: list
  elements: dict
  sample: [{"signal": "SIGHUP", "pid": 4242, "phase": "hup", "at": 1700000000.1, "delivered": true}]
failed_phase:
  description: The phase that failed, or null.
  returned: always
  type: str
  sample: new_ready
preload_app:
  description: Whether the master preloads the app; null when it cannot be told (stock gunicorn whose config
    computes the value).
  returned: always
  type: bool
  sample: false
code_reloaded:
  description: Whether the new workers run the code the app's path holds now (false with C(preload_app)); null
    when unknown.
  returned: always
  type: bool
  sample: true
refresh:
  description: With the bundled arbiter, its record of the refresh the HUP started (id, trigger, outcome, error,
    replaced...); null otherwise.
  returned: always
  type: dict
  sample: {"id": 3, "trigger": "hup", "outcome": "succeeded", "error": null, "replaced": 2, "targets": 2}
last_boot_failure:
  description: With the bundled arbiter, its last recorded worker boot failure when it happened during this reload.
  returned: always
  type: dict
  sample: {"pid": 4312, "reason": "exited with code 3", "at": 1700000001.0, "outcome": "abort-refresh"}
health:
  description: The health target and the health phase's number of requests, failures and last result.
  returned: always
  type: dict
  sample: {"target": "http://127.0.0.1:8000/health", "checks": [{"phase": "health", "attempts": 3, "failures": 0,
           "streak": 3, "last": {"ok": true, "status": 200}}]}
unit:
  description: The systemd unit and whether it was checked; C(unit.reason) says why checks were skipped.
  returned: always
  type: dict
  sample: {"name": "gunicorn-shop.service", "checked": true, "reason": null, "active_state": "active",
           "main_pid": 4242, "load_state": "loaded"}
duration:
  description: Seconds the whole reload took.
  returned: always
  type: float
  sample: 2.4
notes:
  description: Observations worth reading (skipped checks, fallbacks).
  returned: always
  type: list
  elements: str
  sample: ["unit checks skipped: no unit given"]
"""

import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_common as common
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_operation as operation
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_proc as proc
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_recycle as recycle
from ansible_collections.graceful.gunicorn.plugins.module_utils import refresh_plan as plan


def refresh_ids(status):
    refresh = (status or {}).get("refresh") or {}
    ids = [r.get("id") or 0 for r in (refresh.get("current"), refresh.get("last")) if r]
    return max(ids or [0])


# Seconds the arbiter's channel may stay silent before the reload is judged by /proc alone.
CHANNEL_SILENCE = 5.0


def hup_refresh(status, after_id):
    """The arbiter's refresh started by a HUP after refresh `after_id`, or None."""
    refresh = (status or {}).get("refresh") or {}
    for record in (refresh.get("current"), refresh.get("last")):
        if record and record.get("trigger") == "hup" and (record.get("id") or 0) > after_id:
            return record
    return None


def since(record, started):
    return record if record and (record.get("at") or 0) >= started else None


def main():
    module = AnsibleModule(
        argument_spec=common.common_argument_spec(),
        mutually_exclusive=common.COMMON_MUTUALLY_EXCLUSIVE,
        required_one_of=common.COMMON_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    params = module.params
    found = operation.preflight(module, "reload")
    pid, target, status = found["pid"], found["target"], found["status"]
    old_pids = common.pids(found["before"]["workers"])
    preload = recycle.preload_of(status, proc.cmdline(pid), recycle.read_text(target["config"] or ""))
    code_reloaded = None if preload is None else not preload
    run = operation.Operation(module, found["probe"], found["identity"], "reload")
    run.notes = found["notes"]
    run.phases.items.extend(found["phases"].items)
    use_channel = status is not None

    result = dict(
        flavour=found["flavour"],
        master=pid,
        old_workers=old_pids,
        new_workers=old_pids,
        failed_phase=None,
        preload_app=preload,
        code_reloaded=code_reloaded,
        refresh=None,
        last_boot_failure=None,
        unit=found["unit"],
        notes=run.notes,
    )
    if preload:
        module.warn(
            "master %d preloads the app (preload_app): HUP applies the configuration and replaces the workers, but "
            "they run the code the master loaded at start; deploy new code with graceful.gunicorn.gunicorn_upgrade"
            % pid
        )
    if preload is None:
        run.notes.append("could not tell whether the master preloads the app: code_reloaded is unknown")

    if module.check_mode:
        operation.check_mode_exit(
            module,
            found,
            "would send SIGHUP to master %d (%s) and wait for %d new workers"
            % (pid, found["flavour"], params["workers"] or len(old_pids)),
            phases=run.phases.items,
            health=run.health_result(),
            duration=run.duration(),
            **result,
        )
    found["phases"].end(True, "master %d (%s) with %d workers" % (pid, found["flavour"], len(old_pids)))

    before_refresh = refresh_ids(status)
    state = plan.ReloadState(
        phase="hup",
        flavour=found["flavour"],
        channel=use_channel,
        old_pids=old_pids,
        health_configured=run.probe is not None,
    )
    hup_at = time.time()
    run.enter("hup")
    workers = []
    describe = ""
    channel_lost_since = None
    while True:
        alive, workers, now_status = recycle.observe(pid, target, params, use_channel, found["identity"], run)
        expected = params["workers"] or ((now_status or {}).get("config") or {}).get("workers") or len(old_pids)
        state.update(
            master_alive=alive, workers=workers, expected_workers=expected, deadline_passed=run.deadline_passed()
        )
        if now_status is not None:
            channel_lost_since = None
            state.update(
                reload=since(now_status.get("last_reload"), hup_at - 0.5),
                refresh=hup_refresh(now_status, before_refresh),
                boot_failure=(since(now_status.get("last_boot_failure"), hup_at - 0.5) or {}).get("reason"),
            )
        elif use_channel and alive:
            # A poll can go unanswered (a busy master, or an older arbiter that closed its socket around
            # each fork): keep what it said last, and judge by /proc only once it has stayed silent.
            channel_lost_since = channel_lost_since or time.time()
            if time.time() - channel_lost_since > CHANNEL_SILENCE:
                state.channel = False
        if state.refresh:
            result["refresh"] = state.refresh
        if now_status is not None:
            result["last_boot_failure"] = since(now_status.get("last_boot_failure"), hup_at - 0.5)
        result["new_workers"] = common.pids(workers)
        describe = plan.generation_complete(workers, old_pids, expected)[1]
        if state.phase == "health":
            ok, detail = run.health_phase()
            state.health_ok = ok
            describe = detail
        step = plan.reload_step(state)
        kind = step["action"]
        if kind == "hup":
            state.sent.add("hup")
            run.signal(pid, "SIGHUP")
        elif kind == "advance":
            run.leave(True, "" if state.phase == "hup" else describe)
            state.phase = step["phase"]
            state.sent = set()
            run.enter(step["phase"])
        elif kind == "wait":
            time.sleep(recycle.POLL)
        elif kind == "fail":
            if run.phase != step["phase"]:
                # A rejected configuration is seen while waiting for workers, but it is the HUP that failed.
                for item in run.phases.items:
                    if item["name"] == step["phase"]:
                        item.update(ok=False, detail="%s; %s" % (item["detail"], step["reason"]))
                run.leave(False, "no new generation: the %s phase failed" % step["phase"])
            else:
                run.leave(False, step["reason"])
            result["failed_phase"] = step["phase"]
            result["new_workers"] = common.pids(workers)
            module.fail_json(
                msg="reload failed in phase %s: %s" % (step["phase"], step["reason"]),
                changed=run.changed(),
                phases=run.phases.items,
                signals=run.signals_result(),
                health=run.health_result(),
                duration=run.duration(),
                **result,
            )
        elif kind == "done":
            run.leave(True, describe)
            break
    module.exit_json(
        changed=True,
        msg="reloaded master %d: %d new workers in %.1f s%s"
        % (pid, len(workers), run.duration(), "" if code_reloaded is not False else " (preload_app: same code)"),
        phases=run.phases.items,
        signals=run.signals_result(),
        health=run.health_result(),
        duration=run.duration(),
        **result,
    )


if __name__ == "__main__":
    main()
