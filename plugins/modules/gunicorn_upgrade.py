#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: gunicorn_upgrade
short_description: Binary upgrade of a gunicorn master (USR2) with health gates and rollback
version_added: 0.1.0
description:
  - Starts a new gunicorn master next to the running one with C(SIGUSR2), waits until the new master (which
    writes C(<pidfile>.2)) is alive and all its workers are ready, checks health, drains the old master's workers,
    checks health again for O(bake_seconds) while the new generation serves alone, stops the old master with
    C(SIGTERM) and verifies the promotion (the pidfile names the new master; with a unit, it is still active and
    its C(MainPID) is the new master).
  - With the bundled C(graceful-gunicorn) arbiter the old workers are drained with C(SIGWINCH) and systemd's main
    PID is handed to the new master by the old one. With stock gunicorn (which ignores C(SIGWINCH) unless
    daemonized) the old master is shrunk to one worker with C(SIGTTOU) instead.
  - On a failure in any phase up to the bake, with O(on_failure=rollback), the old master's workers are brought
    back (C(SIGHUP)) if they were drained, the new master is stopped, the old master's health is verified, and the
    module fails naming the phase.
  - Refuses to start while another upgrade is in flight (a live second master); removes a stale C(<pidfile>.2)
    left by a dead one (only a regular file, never through a symlink).
  - The PID in C(<pidfile>.2) and any PID the control socket reports are hints from the service user's directory;
    a second master is accepted only as a child of the verified old master, with its user, in the unit's cgroup,
    running the release's interpreter. Anything else is refused, never signalled, and the upgrade fails (rolling
    back) naming it. Signals go through a pidfd where the kernel has them, so a reused PID is never hit.
  - The new master is executed from the command line and working directory the old one was started with, so a
    release layout where the unit runs the app through a C(current) symlink upgrades to whatever C(current) points
    to at the time of the upgrade. Never delete the previous release before the upgrade has finished.
author:
  - graceful.gunicorn maintainers (@graceful-gunicorn)
extends_documentation_fragment:
  - graceful.gunicorn.gunicorn
options:
  on_failure:
    description:
      - What to do when a phase fails.
      - V(rollback) restores the old master's workers, stops the new master and checks the old one is healthy.
      - V(leave) stops where the failure happened and leaves both masters as they are.
    type: str
    choices: [rollback, leave]
    default: rollback
  bake_seconds:
    description:
      - Seconds the new generation must stay healthy alone (old workers drained) before the old master is stopped.
    type: float
    default: 10.0
  health_interval:
    description:
      - Seconds between health requests while waiting and baking. The new generation must pass
        O(health_checks) requests in a row before the old workers drain, so this also sets how long that gate
        takes.
    type: float
    default: 0.25
  health_max_failures:
    description:
      - Failed health requests that fail a phase.
    type: int
    default: 2
  spawn_timeout:
    description:
      - Seconds to wait for the new master to appear after C(SIGUSR2); a new master that dies while importing the
        app may never be seen.
    type: float
    default: 30.0
  force_stock:
    description:
      - Stock gunicorn cannot hand systemd's main PID to the new master, so under a systemd unit the unit stops
        (and kills the new master) when the old master exits. The module refuses such an upgrade unless this is
        V(true).
    type: bool
    default: false
  release_link:
    description:
      - The symlink the unit starts the app through (for example C(/srv/gunicorn/<instance>/current)).
      - Defaults to C(current) of the instance manifest (C(instance.json) beside the config); never taken from the
        master's environment or working directory, which the app controls.
      - It must be a symlink in a directory only root can write, with no symlink in its path.
    type: path
  restore_release_link:
    description:
      - A rollback after the old workers were drained re-spawns them from the old master, which (without
        C(preload_app)) imports the code its working directory path holds at that moment. With this on, the
        release link is pointed back at the old master's release first, so the old code comes back; the result's
        RV(release_link_restored) says so. A link that O(release) switched is pointed back at the start of any
        rollback, drained or not and whatever this option says, and after a failure that did not roll back while
        the old master serves alone.
      - The old release is the directory directly under the instance's C(releases/) (from the manifest's C(root),
        else beside the link) that the old master's working directory names; it must be a real directory owned by
        root, reached without symlinks. Otherwise the link is left as it is and the failure message says why.
      - The link is swapped atomically (a new symlink under a temporary name, renamed over it).
    type: bool
    default: true
  release:
    description:
      - Switch to this release as part of the upgrade. The release link (O(release_link), or the manifest's
        C(current)) is pointed at the directory of this name directly under the instance's C(releases/) tree, in
        phase V(switch), just before C(SIGUSR2), after every check that could refuse the upgrade; so a refused
        upgrade leaves the link as it was.
      - The directory must be a real directory owned by root and not writable by others, reached without
        symlinks; the link is swapped atomically. A rollback points the link back at the old master's release
        (O(restore_release_link)).
      - The switch is refused when a rollback could not find the old master's release to point the link back at.
      - Without it the upgrade starts whatever the link names already.
    type: str
attributes:
  check_mode:
    description: Can run in check mode and report what would change without changing it.
    support: full
    details: Reports the masters found and what would be signalled, without sending anything.
  diff_mode:
    description: Returns no diff.
    support: none
seealso:
  - module: graceful.gunicorn.gunicorn_info
  - module: graceful.gunicorn.gunicorn_reload
"""

EXAMPLES = r"""
- name: Switch the app to release 2.4.0 (installed under /srv/gunicorn/shop/releases) and upgrade to it
  graceful.gunicorn.gunicorn_upgrade:
    instance: shop
    release: 2.4.0
    bake_seconds: 5

- name: Upgrade the app after switching the current symlink to the new release
  graceful.gunicorn.gunicorn_upgrade:
    instance: shop
    health_url: http://127.0.0.1:8000
    bake_seconds: 15
  register: upgrade

- name: Show how long each phase took
  ansible.builtin.debug:
    msg: "{{ upgrade.phases | map(attribute='name') | zip(upgrade.phases | map(attribute='duration')) | list }}"

- name: Upgrade a stock gunicorn outside systemd, probing over its unix socket
  graceful.gunicorn.gunicorn_upgrade:
    pidfile: /run/app/gunicorn.pid
    health_socket: /run/app/gunicorn.sock
    host_header: app.example.com
    url_prefix: /api
    expected_status: [200, 204]
    on_failure: leave
"""

RETURN = r"""
flavour:
  description: The master that was driven, V(graceful) (bundled arbiter) or V(stock).
  returned: always
  type: str
  sample: graceful
old_master:
  description: PID of the master before the upgrade.
  returned: always
  type: int
  sample: 4242
new_master:
  description: PID of the new master, once one was seen.
  returned: always
  type: int
  sample: 4301
old_workers:
  description: PIDs of the old master's workers before the upgrade.
  returned: always
  type: list
  elements: int
  sample: [4250, 4251]
new_workers:
  description: PIDs of the new master's workers when the upgrade ended.
  returned: always
  type: list
  elements: int
  sample: [4310, 4311]
phases:
  description:
    - Phases in order, each with its name, start and end (epoch seconds), duration, outcome and a detail.
    - Forward phases are V(preflight), V(spawn), V(new_ready), V(health_new), V(drain_old), V(bake),
      V(retire_old), V(promote), with V(switch) before V(spawn) when O(release) is set; after a failure
      V(rollback_restore), V(rollback_stop_new), V(rollback_verify).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "spawn", "started": 1700000000.1, "ended": 1700000001.3, "duration": 1.2, "ok": true,
            "detail": "new master 4301"}]
health:
  description: The health target and, per phase, the number of requests, failures and the last result.
  returned: always
  type: dict
  sample: {"target": "http://127.0.0.1:8000/health", "checks": [{"phase": "bake", "attempts": 20, "failures": 0,
           "last": {"ok": true, "status": 200, "detail": "status 200", "elapsed": 0.003, "at": 1700000009.2}}]}
unit:
  description: The systemd unit and whether it was checked; C(unit.reason) says why checks were skipped.
  returned: always
  type: dict
  sample: {"name": "gunicorn-shop.service", "checked": false, "reason": "systemd is not running on this host",
           "active_state": null, "main_pid": null, "load_state": null}
signals:
  description: Every signal sent, in order, with its target PID, the phase, the time and whether it was delivered.
  returned: always
  type: list
  elements: dict
  sample: [{"signal": "SIGUSR2", "pid": 4242, "phase": "spawn", "at": 1700000000.1, "delivered": true}]
failed_phase:
  description: The phase that failed, or null.
  returned: always
  type: str
  sample: new_ready
rolled_back:
  description: Whether a failed upgrade was rolled back to the old master.
  returned: always
  type: bool
  sample: false
release_link_restored:
  description: When a rollback pointed the release link back at the old release, the link and both targets.
  returned: always
  type: dict
  sample: {"link": "/srv/gunicorn/shop/current", "from": "/srv/gunicorn/shop/releases/2",
           "to": "/srv/gunicorn/shop/releases/1"}
release_switched:
  description: When O(release) pointed the release link at a new release, the link and both targets.
  returned: always
  type: dict
  sample: {"link": "/srv/gunicorn/shop/current", "from": "/srv/gunicorn/shop/releases/1",
           "to": "/srv/gunicorn/shop/releases/2"}
duration:
  description: Seconds the whole upgrade took.
  returned: always
  type: float
  sample: 14.8
notes:
  description: Observations worth reading (skipped checks, stale files removed, fallbacks).
  returned: always
  type: list
  elements: str
  sample: ["unit checks skipped: no unit given"]
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_channel as channel
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_common as common
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_health as health
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_operation as operation
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_proc as proc
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_trust as trust
from ansible_collections.graceful.gunicorn.plugins.module_utils import upgrade_plan as plan

HEALTH_PHASES = ("health_new", "bake", "rollback_verify")
POLL = 0.1
# Seconds after USR2 without a new master in /proc before the arbiter's report of a failed re-exec is believed:
# a re-executed master is forked at once, so a real one shows up well within this.
SPAWN_QUIET = 1.0


class Upgrade:
    """Observes the masters, asks upgrade_plan what to do, does it; all decisions live in upgrade_plan."""

    def __init__(self, module, target, probe, identity, before, flavour, release):
        self.module = module
        self.params = module.params
        self.target = target
        self.probe = probe
        self.identity = identity
        self.old_pid = identity.pid
        unit, notes = identity.unit, identity.notes
        self.new_pid = None
        self.flavour = flavour
        self.unit = unit
        self.notes = notes
        self.phases = common.Phases()
        self.health_checks = []
        self.signals = []
        self.channel_seen = False
        self.release = release
        self.release_restored = None
        self.release_switched = None
        self.release_problem = None
        self.spawn_error = None
        self.usr2_at = None
        self.hard_stop = None
        self.started = time.time()
        self.old_workers_before = common.pids(before["workers"])
        self.new_workers = []
        self.failed_phase = None
        self.failure_reason = None
        self.state = plan.UpgradeState(
            phase="spawn",
            flavour=flavour,
            on_failure=self.params["on_failure"],
            expected_workers=self.params["workers"] or len(before["workers"]) or 1,
            old_initial=len(before["workers"]),
            health_configured=probe is not None,
            unit_checked=unit["checked"],
        )

    # -- observation ---------------------------------------------------------------------------------------------
    def observe(self):
        ready_seconds = self.params["worker_ready_seconds"]
        snap = proc.snapshot(self.old_pid, self.target["pidfile"], ready_seconds, self.identity.judge_new_pid)
        old_alive = snap["master"] is not None and proc.alive(self.old_pid)
        new_workers = snap["new_workers"]
        refusal = common.second_master_refusal(snap, self.old_pid)
        if refusal and not self.state.refused:
            self.state.refused = refusal
        if snap["new_master"] and self.identity.accept_new_master(snap["new_master"]["pid"]) is None:
            self.new_pid = snap["new_master"]["pid"]
        elif self.new_pid:
            alive = proc.alive(self.new_pid)
            new_workers = proc.snapshot(self.new_pid, None, ready_seconds)["workers"] if alive else []
        old_workers = snap["workers"] if old_alive else []
        if self.flavour == "graceful" and self.target["control_socket"]:
            # The bundled arbiter knows which workers are ready (booted, health-checked, not retiring).
            new_workers = self.apply_channel_readiness(self.new_pid, new_workers)
            old_workers = self.apply_channel_readiness(self.old_pid, old_workers) if old_alive else []
            if self.state.phase == "spawn" and old_alive and "usr2" in self.state.sent:
                self.check_failed_reexec()
        self.new_workers = new_workers
        state = self.state
        state.update(
            old_alive=old_alive,
            old_workers=len(old_workers),
            old_ready=sum(1 for w in old_workers if w["ready"]),
            new_pid=self.new_pid,
            new_alive=bool(self.new_pid) and proc.alive(self.new_pid),
            new_workers=len(new_workers),
            new_ready=sum(1 for w in new_workers if w["ready"]),
            deadline_passed=time.time() >= self.deadline,
            spawn_quiet=self.usr2_at is not None and time.time() - self.usr2_at >= SPAWN_QUIET,
        )
        if state.phase == "promote":
            state.pidfile_pid = read_pid(self.target["pidfile"]) if self.target["pidfile"] else self.new_pid
            if self.target["pidfile"]:
                state.second_pidfile_pid = read_pid(self.target["pidfile"] + ".2")
            if self.unit["checked"]:
                unit = common.unit_state(self.target["unit"])
                state.update(unit_active=unit["active_state"] in ("active", "reloading"), main_pid=unit["main_pid"])
                self.unit = unit
        if state.phase in HEALTH_PHASES and self.probe is not None:
            if time.time() >= self.next_probe:
                self.tracker.record(health.probe_once(self.probe))
                self.next_probe = time.time() + self.params["health_interval"]
            state.health_ok = self.health_verdict(state.phase)
        else:
            state.health_ok = None
        if state.phase == "bake":
            state.bake_done = time.time() - self.phase_started >= self.params["bake_seconds"] and (
                self.probe is None or (self.tracker.attempts > 0 and self.tracker.last["ok"])
            )

    def apply_channel_readiness(self, pid, workers):
        if not pid or not workers:
            return workers
        data = channel.status(self.target["control_socket"], pid, timeout=2.0, memory=False)
        if data is None:
            return workers
        master = self.identity.master if pid == self.old_pid else self.identity.new_master
        refusal = common.channel_refusal(data, self.identity, master) if master else None
        if refusal and not self.state.refused:
            self.state.refused = refusal
        self.channel_seen = True
        ready = set(channel.ready_pids(data))
        return [dict(w, ready=w["pid"] in ready and w["ready"]) for w in workers]

    def check_failed_reexec(self):
        """The bundled arbiter reports a new master that died before we saw it: fail the spawn at once.

        The control socket lies in a directory the service user owns: the PID it reports is quoted, never
        taken as the new master (only a checked child of the old master found in /proc is)."""
        data = channel.status(self.target["control_socket"], self.old_pid, timeout=2.0, memory=False)
        last = ((data or {}).get("master") or {}).get("last_upgrade") or {}
        if last.get("outcome") == "failed" and (last.get("at") or 0) >= self.phase_started - 1:
            reported = last.get("pid")
            if isinstance(reported, int) and reported > 0 and proc.alive(reported):
                # A re-exec child that failed has exited: a report naming a live PID that is not a checked
                # second master is a lie told over a socket the service user can replace.
                reason = self.identity.judge_new_pid(reported) if reported != self.new_pid else None
                if reason and not self.state.refused:
                    self.state.refused = (
                        "refused the control socket's report of a failed re-exec: it names PID %d, which is "
                        "running: %s" % (reported, reason)
                    )
                return
            if self.new_pid:
                return
            self.spawn_error = str(last.get("error") or "no error given")[:500]
            self.state.spawn_failed = "the bundled arbiter reports the new master (PID %s) failed: %s" % (
                reported,
                self.spawn_error,
            )

    def health_verdict(self, phase):
        tracker = self.tracker
        if tracker.failures >= self.params["health_max_failures"]:
            return False
        if phase == "bake":
            return None  # bake passes by time, fails by failures
        if tracker.streak >= self.params["health_checks"]:
            return True
        return None

    # -- phases --------------------------------------------------------------------------------------------------
    def enter(self, phase, detail=""):
        self.state.phase = phase
        self.state.sent = set()
        self.phase_started = time.time()
        timeout = self.params["timeout"]
        if phase == "spawn":
            timeout = min(timeout, self.params["spawn_timeout"])
        self.deadline = self.phase_started + timeout
        self.tracker = health.HealthTracker()
        self.next_probe = 0.0
        self.phases.start(phase, detail)

    def leave(self, ok, detail):
        sent = ["%s to %d" % (s["signal"], s["pid"]) for s in self.signals if s["phase"] == self.state.phase]
        if sent:
            detail = "%s%s%s" % (", ".join(sent), "; " if detail else "", detail)
        if self.probe is not None and self.state.phase in HEALTH_PHASES:
            check = self.tracker.summary()
            check["phase"] = self.state.phase
            self.health_checks.append(check)
        self.phases.end(ok, detail)

    def signal(self, pid, signame, label, handle=None):
        """Signal the verified old master, the accepted new master, or a checked worker handle; nothing else."""
        try:
            if handle is not None:
                delivered = handle.send(signame)
            elif pid == self.old_pid:
                delivered = self.identity.signal_master(signame)
            elif self.identity.new_master is not None and pid == self.identity.new_master["pid"]:
                delivered = self.identity.signal_new_master(signame)
            else:
                raise trust.Refused(
                    "refused to signal PID %s: it is neither the verified master nor an accepted second master" % pid
                )
        except trust.Refused as exc:
            self.leave(False, str(exc))
            return self.finish_failure(self.state.phase, str(exc), False)
        self.state.sent.add(label)
        self.signals.append(
            {
                "signal": signame,
                "pid": pid,
                "phase": self.state.phase,
                "at": round(time.time(), 3),
                "delivered": delivered,
            }
        )

    def run(self):
        """Observe, ask upgrade_plan, act through ACTIONS until an action ends the run."""
        self.enter("spawn")
        self.hard_stop = time.time() + 12 * self.params["timeout"] + self.params["bake_seconds"] + 60
        while True:
            self.observe()
            step = plan.next_action(self.state)
            ACTIONS[step["action"]](self, step)

    # -- actions (ACTIONS maps upgrade_plan's action names to these) ----------------------------------------------
    def act_wait(self, _step):
        if time.time() > self.hard_stop:
            self.finish_failure(self.state.phase, "the upgrade took too long", False)
        interval = self.params["health_interval"] if self.state.phase in HEALTH_PHASES else POLL
        time.sleep(min(interval, POLL * 3))

    def act_advance(self, step):
        self.leave(True, self.describe_phase_end())
        self.enter(step["phase"])

    def act_usr2(self, _step):
        self.usr2_at = time.time()
        self.signal(self.old_pid, "SIGUSR2", "usr2")

    def act_winch_old(self, _step):
        self.signal(self.old_pid, "SIGWINCH", "winch")
        self.state.drained = True

    def act_ttou_old(self, _step):
        self.signal(self.old_pid, "SIGTTOU", "ttou")
        self.state.ttou_sent += 1
        self.state.drained = True

    def act_term_old(self, _step):
        self.signal(self.old_pid, "SIGTERM", "term_old")

    def act_rollback_hup_old(self, _step):
        self.restore_release_link(switched_here=bool(self.release_switched))
        self.signal(self.old_pid, "SIGHUP", "hup_old")

    def act_term_new(self, _step):
        self.signal(self.new_pid, "SIGTERM", "term_new")

    def act_kill_new(self, _step):
        """SIGKILL the new master and its workers, which would be orphaned (a worker hanging at import never
        notices). The workers are checked (children of the new master, its uid and cgroup) and held before the
        master dies."""
        handles = []
        for pid in common.pids(self.new_workers):
            try:
                handle = self.identity.open_worker(pid, self.identity.new_master)
            except trust.Refused as exc:
                self.notes.append(str(exc))
                continue
            if handle is not None:
                handles.append(handle)
        try:
            self.signal(self.new_pid, "SIGKILL", "kill_new")
            for handle in handles:
                self.signal(handle.pid, "SIGKILL", "kill_new_worker", handle)
        finally:
            for handle in handles:
                handle.close()

    def act_rollback(self, step):
        self.failed_phase, self.failure_reason = step["phase"], step["reason"]
        self.leave(False, step["reason"])
        self.enter("rollback_restore", "after %s failed" % step["phase"])
        if self.release_switched:
            # The link this upgrade switched goes back first: an old worker that dies now is re-spawned from it.
            self.restore_release_link(switched_here=True)

    def act_rolled_back(self, _step):
        self.leave(True, "old master %d healthy" % self.old_pid)
        self.remove_stale_second_pidfile()
        self.finish_failure(self.failed_phase, self.failure_reason, True)

    def act_fail(self, step):
        self.leave(False, step["reason"])
        if self.failed_phase:
            self.finish_failure(
                self.failed_phase,
                "%s; then the rollback failed in %s: %s" % (self.failure_reason, step["phase"], step["reason"]),
                False,
            )
        self.finish_failure(step["phase"], step["reason"], False)

    def act_done(self, _step):
        self.leave(True, self.describe_phase_end())
        self.finish_success()

    def describe_phase_end(self):
        state = self.state
        phase = state.phase
        if phase == "spawn":
            return "new master %s" % self.new_pid
        if phase == "new_ready":
            return "%d of %d new workers ready: %s" % (
                state.new_ready,
                state.new_workers,
                common.pids(self.new_workers),
            )
        if phase in ("health_new", "bake") and self.probe is None:
            return "no health check configured"
        if phase in ("health_new", "bake"):
            return "%d health requests, %d failed" % (self.tracker.attempts, self.tracker.failures)
        if phase == "drain_old":
            return "%d old workers left" % state.old_workers
        if phase == "retire_old":
            return "old master %d exited" % self.old_pid
        if phase == "promote":
            return "pidfile names %s; unit %s" % (
                state.pidfile_pid,
                "active with MainPID %s" % state.main_pid if self.unit["checked"] else "not checked",
            )
        return ""

    def restore_release_link(self, switched_here=False):
        """Point the release link back at the old master's release, so its re-spawned workers run the old code.

        The link is the manifest's `current` (or release_link), the target a real directory directly under the
        instance's releases/ named by the old master's working directory; see release_plan. A link this upgrade
        switched itself (option release) goes back whatever restore_release_link says."""
        if not self.params["restore_release_link"] and not switched_here:
            self.notes.append("the old master's new workers import the code its working directory holds now")
            return
        release = self.release
        problem = release["problem"]
        if not problem:
            target = os.path.join(release["releases"], release["name"])
            try:
                if os.readlink(release["link"]) == target:
                    return
                previous = trust.swap_current(release["link"], release["releases"], release["name"])
            except (trust.Refused, OSError) as exc:
                problem = str(exc)
            else:
                self.release_restored = {"link": release["link"], "from": previous, "to": target}
                self.notes.append(
                    "pointed %s back from %s to %s before re-spawning the old workers"
                    % (release["link"], previous, target)
                )
                return
        self.release_problem = problem
        self.notes.append("the release link was not restored: %s" % problem)

    def remove_stale_second_pidfile(self):
        removed = trust.remove_second_pidfile(self.target["pidfile"], proc.alive)
        if removed:
            self.notes.append(removed)

    def result(self):
        return dict(
            flavour=self.flavour,
            old_master=self.old_pid,
            new_master=self.new_pid,
            old_workers=self.old_workers_before,
            new_workers=common.pids(self.new_workers),
            phases=self.phases.items,
            signals=self.signals,
            health={"target": health.describe(self.probe), "checks": self.health_checks},
            unit=self.unit,
            failed_phase=self.failed_phase,
            rolled_back=False,
            release_link_restored=self.release_restored,
            release_switched=self.release_switched,
            duration=round(time.time() - self.started, 3),
            notes=self.notes + (["worker readiness from the bundled arbiter's channel"] if self.channel_seen else []),
        )

    def finish_success(self):
        result = self.result()
        self.module.exit_json(
            changed=True,
            msg="upgraded: master %d replaced by %d in %.1f s" % (self.old_pid, self.new_pid, result["duration"]),
            **result,
        )

    def restore_switched_link_if_old_serves_alone(self):
        """After a failure that did not roll back (a refused signal, a timeout, a failed rollback): a link this
        upgrade switched goes back while the old master serves alone, so that a restart does not start the
        release that never took over. With both masters alive (on_failure=leave) it stays, and a note says so."""
        if not self.release_switched or self.release_restored:
            return
        if proc.alive(self.old_pid) and not (self.new_pid and proc.alive(self.new_pid)):
            self.restore_release_link(switched_here=True)
        else:
            self.notes.append(
                "left %s at %s: the old master does not serve alone"
                % (self.release_switched["link"], self.release_switched["to"])
            )

    def finish_failure(self, phase, reason, rolled_back):
        if not rolled_back:
            self.restore_switched_link_if_old_serves_alone()
        result = self.result()
        result["failed_phase"] = phase
        result["rolled_back"] = rolled_back
        if rolled_back:
            msg = "upgrade failed in phase %s: %s; rolled back: the old master %d serves" % (
                phase,
                reason,
                self.old_pid,
            )
        else:
            msg = "upgrade failed in phase %s: %s" % (phase, reason)
        if self.release_problem:
            msg += "; the release link was not restored: %s" % self.release_problem
        self.module.fail_json(msg=msg, changed=True, **result)


# What each of upgrade_plan's actions does; finish_success and finish_failure end the module run.
ACTIONS = {
    "wait": Upgrade.act_wait,
    "advance": Upgrade.act_advance,
    "usr2": Upgrade.act_usr2,
    "winch_old": Upgrade.act_winch_old,
    "ttou_old": Upgrade.act_ttou_old,
    "term_old": Upgrade.act_term_old,
    "rollback_hup_old": Upgrade.act_rollback_hup_old,
    "term_new": Upgrade.act_term_new,
    "kill_new": Upgrade.act_kill_new,
    "rollback": Upgrade.act_rollback,
    "rolled_back": Upgrade.act_rolled_back,
    "fail": Upgrade.act_fail,
    "done": Upgrade.act_done,
}


def read_pid(path):
    """The PID a pidfile names, or None (missing, empty, or not a regular file)."""
    try:
        return proc.read_pidfile(path)[0]
    except proc.DiscoveryError:
        return None


def release_plan(link_option, manifest, cwd):
    """{'link', 'releases', 'name', 'problem'}: what a rollback may point `current` back at, decided up front.

    The link is the release_link option (operator input), else the trusted manifest's `current`; never the
    master's $PWD. The releases tree is the manifest's <root>/releases, else the link's sibling releases/. The old
    release is only a NAME taken from the master's working directory, which must lie under that tree.
    """
    plan = {"link": None, "releases": None, "name": None, "problem": None}
    manifest = manifest or {}
    link = link_option or manifest.get("current")
    if not isinstance(link, str) or not link or common.path_problem("current", link):
        plan["problem"] = "no release link: no trusted instance manifest and no release_link option"
        return plan
    root = manifest.get("root")
    if isinstance(root, str) and root and not common.path_problem("root", root):
        releases = os.path.join(root, "releases")
    else:
        releases = os.path.join(os.path.dirname(link), "releases")
    plan.update(link=link, releases=releases)
    name = trust.release_name_of(cwd, releases)
    if name is None:
        plan["problem"] = "%s (the old master's working directory) is not a release under %s" % (cwd, releases)
        return plan
    plan["name"] = name
    plan["problem"] = trust.judge_link(link) or trust.judge_release_target(releases, name)
    return plan


def switch_problem(release, name):
    """Why the release link cannot be switched to releases/<name>, or None (release_plan's link and tree, the way
    back a rollback needs, and trust's checks of the link and the target)."""
    if not release["link"] or not release["releases"]:
        return "no release link to switch: no trusted instance manifest and no release_link option"
    if release["problem"]:
        # A rollback could not point the link back at the old master's release.
        return "the way back is unknown: %s" % release["problem"]
    reason = trust.judge_link(release["link"]) or trust.judge_release_target(release["releases"], name)
    if reason:
        return "%s not switched to release %s: %s" % (release["link"], name, reason)
    return None


def refuse_switch(module, found, problem):
    """Fail the module in phase switch, with nothing signalled and the link as it was."""
    found["phases"].end(False, problem)
    module.fail_json(
        msg="upgrade failed in phase switch: %s" % problem,
        changed=False,
        failed_phase="switch",
        rolled_back=False,
        old_master=found["pid"],
        release_switched=None,
        signals=[],
        phases=found["phases"].items,
        flavour=found["flavour"],
        unit=found["unit"],
        notes=found["notes"],
    )


def switch_release(module, found, release, name):
    """Phase switch: point the release link at releases/<name>. Returns {link, from, to}, or None when the link
    names it already; fails the module (refuse_switch) when the switch is refused."""
    found["phases"].start("switch")
    problem = switch_problem(release, name)
    if not problem:
        target = os.path.join(release["releases"], name)
        try:
            previous = os.readlink(release["link"])
            if previous == target:
                found["phases"].end(True, "%s names %s already" % (release["link"], target))
                return None
            previous = trust.swap_current(release["link"], release["releases"], name)
        except (trust.Refused, OSError) as exc:
            problem = "%s not switched to release %s: %s" % (release["link"], name, exc)
    if problem:
        refuse_switch(module, found, problem)
    found["phases"].end(True, "%s: %s to %s" % (release["link"], previous, target))
    return {"link": release["link"], "from": previous, "to": target}


def upgrade_option_problems(params):
    problems = []
    for key in ("bake_seconds", "health_interval", "spawn_timeout"):
        if params[key] < 0 or (key != "bake_seconds" and params[key] == 0):
            problems.append("%s must be positive" % key)
    if params["health_max_failures"] < 1:
        problems.append("health_max_failures must be at least 1")
    if params.get("release") is not None and not trust.RELEASE_NAME_RE.fullmatch(params["release"]):
        problems.append(
            "release %r is not a release directory's name (letters, digits and ._+- only, not starting with a "
            "dot or a dash)" % (params["release"],)
        )
    if params.get("release_link") and not common.path_problem("release_link", params["release_link"]):
        reason = trust.judge_link(params["release_link"])
        if reason:
            problems.append("release_link %s (it must be a symlink in a directory only root can write)" % reason)
    return problems


def main():
    argument_spec = common.common_argument_spec()
    argument_spec.update(
        on_failure=dict(type="str", default="rollback", choices=["rollback", "leave"]),
        bake_seconds=dict(type="float", default=10.0),
        health_interval=dict(type="float", default=0.25),
        health_max_failures=dict(type="int", default=2),
        spawn_timeout=dict(type="float", default=30.0),
        force_stock=dict(type="bool", default=False),
        release_link=dict(type="path"),
        restore_release_link=dict(type="bool", default=True),
        release=dict(type="str"),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=common.COMMON_MUTUALLY_EXCLUSIVE,
        required_one_of=common.COMMON_REQUIRED_ONE_OF,
        supports_check_mode=True,
    )
    found = operation.preflight(
        module,
        "upgrade",
        upgrade_option_problems,
        refusal_result=lambda found: {"rolled_back": False, "old_master": found.get("pid")},
    )
    params, probe, target, identity = found["params"], found["probe"], found["target"], found["identity"]
    old_pid, unit, notes = identity.pid, identity.unit, identity.notes
    flavour, phases = found["flavour"], found["phases"]
    if flavour == "stock" and unit["checked"] and unit["main_pid"] == old_pid and not params["force_stock"]:
        operation.refuse(
            module,
            found,
            "stock gunicorn under systemd unit %s: the unit would stop (and kill the new master) when the old "
            "master exits; run the bundled graceful-gunicorn arbiter or set force_stock" % unit["name"],
        )
    # Workers still booting import whatever release `current` points to now: wait until they all run.
    operation.wait_until_ready(
        module,
        found,
        lambda: proc.snapshot(old_pid, target["pidfile"], params["worker_ready_seconds"], identity.judge_new_pid)[
            "workers"
        ],
    )
    before = found["before"]
    if probe is None:
        notes.append("no health check configured: readiness is worker heartbeat and age only")
    else:
        ok, summary = health.wait_healthy(
            probe, 1, time.time() + params["timeout"], params["health_interval"], params["health_max_failures"]
        )
        if not ok:
            operation.refuse(
                module,
                found,
                "the app is not healthy before the upgrade (%s): not starting one"
                % ((summary["last"] or {}).get("detail")),
            )

    manifest = common.read_manifest(common.manifest_path(params))
    release = release_plan(params["release_link"], manifest, identity.master["cwd"])
    if module.check_mode:
        stale = target["pidfile"] and os.path.lexists(target["pidfile"] + ".2")
        if params["release"] is not None:
            problem = switch_problem(release, params["release"])
            if problem:
                phases.start("switch")
                refuse_switch(module, found, problem)
            notes.append("would point %s at release %s first" % (release["link"], params["release"]))
        operation.check_mode_exit(
            module,
            found,
            "would send USR2 to master %d (%s), then drain with %s and TERM it once the new master is healthy"
            % (old_pid, flavour, "WINCH" if flavour == "graceful" else "TTOU"),
            flavour=flavour,
            old_master=old_pid,
            new_master=None,
            old_workers=common.pids(before["workers"]),
            new_workers=[],
            phases=phases.items,
            health={"target": health.describe(probe), "checks": []},
            unit=unit,
            failed_phase=None,
            rolled_back=False,
            release_link_restored=None,
            release_switched=None,
            duration=0.0,
            notes=notes + (["would remove stale %s.2" % target["pidfile"]] if stale else []),
        )
    removed = trust.remove_second_pidfile(target["pidfile"], proc.alive)
    if removed:
        notes.append(removed)
    phases.end(True, "master %d (%s) with %d workers" % (old_pid, flavour, len(before["workers"])))

    switched = None
    if params["release"] is not None:
        switched = switch_release(module, found, release, params["release"])
    upgrade = Upgrade(module, target, probe, identity, before, flavour, release)
    upgrade.release_switched = switched
    upgrade.phases.items.extend(phases.items)
    upgrade.run()


if __name__ == "__main__":
    main()
