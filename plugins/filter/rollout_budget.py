# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: rollout_budget
author: graceful.gunicorn contributors
version_added: 0.2.0
short_description: The hosts a rollout failed on, against its failure budget
description:
  - Used by the collection's rollout playbooks at the start of each host's turn to decide whether the rollout goes on.
  - A host counts as failed once its turn has started (its fact C(__gunicorn_rollout_started) is true) and its outcome
    (the fact C(gunicorn_rollout_result)) has the status C(failed), C(rolled_back) or C(unreachable), or it has no
    outcome at all (its turn ended outside the rollout's own handling).
  - The budget is exceeded when the failed hosts are more than O(max_fail_percentage) percent of O(hosts), the hosts
    the rollout targets (all batches), or when the rollout's tasks before the first switch failed (O(hooks)),
    whatever the budget.
extends_documentation_fragment:
  - graceful.gunicorn.rollout_hosts
options:
  max_fail_percentage:
    description: The percentage of O(hosts) that may fail, 0 to 100.
    type: float
    required: true
  hooks:
    description:
      - The outcomes of the rollout's run-once tasks by phase (C(__gunicorn_rollout_hooks)), each with C(ok).
        A V(before_switch) outcome that is not C(ok) stops the rollout.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Leave this host untouched once the rollout has failed on too many hosts
  when: (hostvars | graceful.gunicorn.rollout_budget(ansible_play_hosts_all, 25)).exceeded
  ansible.builtin.meta: end_host
"""

RETURN = r"""
_value:
  description: The count against the budget.
  type: dict
  contains:
    failed:
      description: The failed hosts, in the order of O(hosts).
      type: list
      elements: str
    exceeded:
      description: Whether more than O(max_fail_percentage) percent of O(hosts) failed.
      type: bool
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

FAILED_STATUSES = ("failed", "rolled_back", "unreachable")


def host_failed(host_vars):
    if not host_vars.get("__gunicorn_rollout_started", False):
        return False
    result = host_vars.get("gunicorn_rollout_result") or {}
    if not isinstance(result, Mapping) or not result:
        return True
    return result.get("status") in FAILED_STATUSES


def rollout_budget(hostvars, hosts, max_fail_percentage, hooks=None):
    if not isinstance(hostvars, Mapping):
        raise AnsibleFilterError("rollout_budget: the input must be the hosts' variables (hostvars)")
    if isinstance(hosts, (str, bytes)):
        raise AnsibleFilterError("rollout_budget: hosts must be a list of host names, got a string")
    try:
        budget = float(max_fail_percentage)
    except (TypeError, ValueError):
        raise AnsibleFilterError(
            "rollout_budget: max_fail_percentage must be a number, got %r" % (max_fail_percentage,)
        ) from None
    if isinstance(max_fail_percentage, bool) or not 0 <= budget <= 100:
        raise AnsibleFilterError(
            "rollout_budget: max_fail_percentage must be 0 to 100, got %r" % (max_fail_percentage,)
        )
    hosts = list(hosts)
    failed = [host for host in hosts if host in hostvars and host_failed(hostvars[host])]
    before_switch = (hooks or {}).get("before_switch") if isinstance(hooks, Mapping) else None
    # Run but not passed: failed, or its host left the play before the outcome was recorded.
    hook_failed = (
        isinstance(before_switch, Mapping) and bool(before_switch.get("run")) and before_switch.get("ok") is not True
    )
    return {"failed": failed, "exceeded": hook_failed or len(failed) * 100 > len(hosts) * budget}


class FilterModule(object):
    def filters(self):
        return {"rollout_budget": rollout_budget}
