# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: rollout_summary
author: graceful.gunicorn contributors
version_added: 0.2.0
short_description: The summary of a rollout, one entry per targeted host
description:
  - Used by the last play of the collection's rollout playbooks; the result is written to C(gunicorn_summary_file)
    and published as the job stat C(gunicorn_rollout_summary).
  - "Each host gets a status: the one its turn recorded in the fact C(gunicorn_rollout_result) (C(upgraded),
    C(skipped), C(removed) for a deploy with C(gunicorn_state=absent), C(failed), C(rolled_back),
    C(unreachable)); C(unreachable) when its turn started, recorded nothing
    and the host has left the play (it stopped answering); C(failed) when its turn started and recorded nothing;
    C(untouched) when its turn never started (the rollout stopped before it), with the release it runs as read by
    the fact C(__gunicorn_rollout_untouched_info) when that could be read, and a note when the stage play
    installed the release there (C(__gunicorn_rollout_stage) is C(staged))."
extends_documentation_fragment:
  - graceful.gunicorn.rollout_hosts
options:
  active:
    description: The hosts still in the play, normally C(ansible_play_hosts); the others failed or became unreachable.
    type: list
    elements: str
    required: true
  rollout:
    description: The rollout's checked settings (C(action), C(instance), C(target_release)).
    type: dict
    required: true
  hooks:
    description:
      - The run-once tasks by phase (C(__gunicorn_rollout_hooks), from C(graceful.gunicorn.rollout_hook) and
        C(rollout/hooks.yml)), each with C(tasks), C(run), C(host), C(on), C(reason) and, once run, C(ok) and
        C(message).
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Publish the summary as job stats
  ansible.builtin.set_stats:
    data:
      gunicorn_rollout_summary: >-
        {{ hostvars | graceful.gunicorn.rollout_summary(ansible_play_hosts_all, ansible_play_hosts, rollout) }}
"""

RETURN = r"""
_value:
  description: The rollout summary.
  type: dict
  contains:
    instance:
      description: The instance rolled out.
      type: str
    action:
      description: The rollout's action (deploy, upgrade, rollback, reload, refresh).
      type: str
    target_release:
      description: The release rolled out or back to, or null.
      type: str
    hosts:
      description: >-
        Per host name: C(status), C(release) (after), C(previous) (before), C(failed_phase) (null unless failed)
        and C(message).
      type: dict
    hooks:
      description:
        - Per phase (V(before_switch), V(after_rollout)) whose task file is set, C(tasks) (the file), C(status)
          (C(ok), C(failed), or C(not_run)), C(host) (where it ran, or was delegated from to the controller),
          C(on) and C(message) (the failure, or why it did not run).
      type: dict
    stopped:
      description: Whether some hosts were left untouched because the failure budget was exceeded.
      type: bool
    ok:
      description: Whether every host was upgraded, removed as asked, or had nothing to do, and every run-once task
        file that ran passed.
      type: bool
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text

STATUSES = ("upgraded", "skipped", "removed", "failed", "rolled_back", "unreachable", "untouched")
GOOD_STATUSES = ("upgraded", "skipped", "removed")


def optional_text(value):
    return None if value is None or to_text(value).strip() == "" else to_text(value).strip()


def mapping(value):
    return value if isinstance(value, Mapping) else {}


def host_entry(host_vars, active):
    result = mapping(host_vars.get("gunicorn_rollout_result"))
    if result:
        status = to_text(result.get("status", "failed")).strip()
        return {
            "status": status if status in STATUSES else "failed",
            "release": optional_text(result.get("release")),
            "previous": optional_text(result.get("previous")),
            "failed_phase": optional_text(result.get("failed_phase")),
            "message": to_text(result.get("message") or ""),
        }
    if host_vars.get("__gunicorn_rollout_started", False):
        phase = optional_text(host_vars.get("__gunicorn_rollout_phase")) or "unknown"
        return {
            "status": "failed" if active else "unreachable",
            "release": None,
            "previous": None,
            "failed_phase": phase,
            "message": (
                "the host failed outside the rollout's own handling (see the output above)"
                if active
                else "the host stopped answering during the %s phase" % phase
            ),
        }
    info = mapping(host_vars.get("__gunicorn_rollout_untouched_info"))
    release = optional_text(mapping(info.get("master")).get("release"))
    message = "not reached: the rollout stopped before this host"
    if host_vars.get("__gunicorn_rollout_stage") == "staged":
        message += " (the release is staged there)"
    if info.get("unreachable"):
        message += " (and it did not answer, so its release is unknown)"
    return {"status": "untouched", "release": release, "previous": release, "failed_phase": None, "message": message}


def hook_entry(hook):
    hook = mapping(hook)
    if not hook.get("run"):
        status, message = "not_run", to_text(hook.get("reason") or "")
    elif hook.get("ok") is True:
        status, message = "ok", ""
    else:
        status = "failed"
        # No outcome recorded: the host left the play while the tasks ran.
        message = to_text(hook.get("message") or "%s stopped answering while the tasks ran" % hook.get("host"))
    return {
        "tasks": optional_text(hook.get("tasks")),
        "status": status,
        "host": optional_text(hook.get("host")),
        "on": optional_text(hook.get("on")) or "host",
        "message": message,
    }


def rollout_summary(hostvars, hosts, active, rollout, hooks=None):
    if not isinstance(hostvars, Mapping):
        raise AnsibleFilterError("rollout_summary: the input must be the hosts' variables (hostvars)")
    if isinstance(hosts, (str, bytes)) or isinstance(active, (str, bytes)):
        raise AnsibleFilterError("rollout_summary: hosts and active must be lists of host names")
    rollout = mapping(rollout)
    active = set(active)
    results = {}
    for host in hosts:
        results[to_text(host)] = host_entry(mapping(hostvars[host]) if host in hostvars else {}, host in active)
    statuses = [entry["status"] for entry in results.values()]
    hook_entries = dict(
        (to_text(phase), hook_entry(hook))
        for phase, hook in sorted(mapping(hooks).items())
        if optional_text(mapping(hook).get("tasks"))
    )
    hooks_ok = all(entry["status"] != "failed" for entry in hook_entries.values())
    return {
        "instance": optional_text(rollout.get("instance")),
        "action": optional_text(rollout.get("action")),
        "target_release": optional_text(rollout.get("target_release")),
        "hosts": results,
        "hooks": hook_entries,
        "stopped": "untouched" in statuses,
        "ok": bool(statuses) and hooks_ok and all(status in GOOD_STATUSES for status in statuses),
    }


class FilterModule(object):
    def filters(self):
        return {"rollout_summary": rollout_summary}
