# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: rollout_hook
author: graceful.gunicorn contributors
version_added: 0.3.0
short_description: Whether, and on which host, a rollout runs its run-once tasks
description:
  - Used by the collection's deploy and upgrade playbooks (C(rollout/hooks.yml)) to place the task files of
    C(gunicorn_before_switch_tasks) and C(gunicorn_after_rollout_tasks), which run once per rollout.
  - V(before_switch) runs after the stage play and before the first host's turn, on the first host, in the order of
    O(hosts), where the release is installed (its stage is C(staged), or C(live) where the host runs it already).
    It does not run when the stage play already stopped the rollout (its failures exceed the budget).
  - V(after_rollout) runs after the last host's turn, on the first host that runs the release, and only when every
    host was upgraded, had nothing to change, or had the instance removed as asked; not after a failure, a
    rollback or a stopped rollout.
  - With C(run_once_on) V(controller) in O(rollout), the tasks run on the controller, but the choice is the same;
    the playbook delegates them from the chosen host, which also carries a failure in the recap.
extends_documentation_fragment:
  - graceful.gunicorn.rollout_hosts
options:
  phase:
    description: Which run-once tasks.
    type: str
    required: true
    choices: [before_switch, after_rollout]
  rollout:
    description:
      - The checked rollout settings (C(__gunicorn_rollout)), with C(before_switch_tasks), C(after_rollout_tasks),
        C(run_once_on) and C(max_fail_percentage).
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Choose where the tasks before the first switch run
  ansible.builtin.set_fact:
    hook: "{{ hostvars | graceful.gunicorn.rollout_hook(ansible_play_hosts_all, 'before_switch', __gunicorn_rollout) }}"
"""

RETURN = r"""
_value:
  description: The decision.
  type: dict
  contains:
    run:
      description: Whether the tasks run.
      type: bool
    host:
      description: The host they run on, or are delegated from; null when they do not run.
      type: str
    tasks:
      description: The task file.
      type: str
    "on":
      description: V(host) or V(controller).
      type: str
    reason:
      description: Why they run there, or why they do not run.
      type: str
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text
from ansible_collections.graceful.gunicorn.plugins.filter.rollout_budget import rollout_budget

PHASES = {"before_switch": "before_switch_tasks", "after_rollout": "after_rollout_tasks"}
PLACES = ("host", "controller")
INSTALLED_STAGES = ("staged", "live")
DONE_STATUSES = ("upgraded", "skipped", "removed")
RUNS_RELEASE = ("upgraded", "skipped")


def _result(host_vars):
    result = host_vars.get("gunicorn_rollout_result")
    return result if isinstance(result, Mapping) else {}


def rollout_hook(hostvars, hosts, phase, rollout):
    if not isinstance(hostvars, Mapping):
        raise AnsibleFilterError("rollout_hook: the input must be the hosts' variables (hostvars)")
    if isinstance(hosts, (str, bytes)):
        raise AnsibleFilterError("rollout_hook: hosts must be a list of host names, got a string")
    if phase not in PHASES:
        raise AnsibleFilterError("rollout_hook: phase must be before_switch or after_rollout, not %r" % (phase,))
    if not isinstance(rollout, Mapping):
        raise AnsibleFilterError("rollout_hook: rollout must be the checked rollout settings")
    tasks = to_text(rollout.get(PHASES[phase]) or "").strip()
    place = to_text(rollout.get("run_once_on") or "host").strip()
    if place not in PLACES:
        raise AnsibleFilterError("rollout_hook: run_once_on must be host or controller, not %r" % (place,))
    decision = {"run": False, "host": None, "tasks": tasks, "on": place, "reason": ""}
    if not tasks:
        decision["reason"] = "no %s are set" % ("gunicorn_" + PHASES[phase])
        return decision
    hosts = [to_text(host) for host in hosts]
    known = dict((host, hostvars[host] if isinstance(hostvars.get(host), Mapping) else {}) for host in hosts)

    if phase == "before_switch":
        if rollout_budget(hostvars, hosts, rollout.get("max_fail_percentage", 0))["exceeded"]:
            decision["reason"] = "the rollout stopped while the release was staged"
            return decision
        ready = [host for host in hosts if known[host].get("__gunicorn_rollout_stage") in INSTALLED_STAGES]
        if not ready:
            decision["reason"] = "no host has the release installed"
            return decision
        decision.update(run=True, host=ready[0], reason="the first host with the release installed")
        return decision

    results = [_result(known[host]) for host in hosts]
    not_done = [host for host, result in zip(hosts, results) if result.get("status") not in DONE_STATUSES]
    if not hosts or not_done:
        decision["reason"] = "not every host was upgraded: %s" % ", ".join(not_done or ["no hosts"])
        return decision
    running = [host for host, result in zip(hosts, results) if result.get("status") in RUNS_RELEASE]
    if not running:
        decision["reason"] = "no host runs the release: the instance was removed from every host"
        return decision
    decision.update(run=True, host=running[0], reason="every host was upgraded or had nothing to change")
    return decision


class FilterModule(object):
    def filters(self):
        return {"rollout_hook": rollout_hook}
