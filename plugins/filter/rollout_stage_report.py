# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: rollout_stage_report
author: graceful.gunicorn contributors
version_added: 0.2.0
short_description: What the stage play of a rollout did on each host, and the line that says it
description:
  - Used by the stage play of the collection's deploy and upgrade playbooks once every host has staged.
  - Each host notes its outcome in the fact C(__gunicorn_rollout_stage), V(staged) (the release is installed and
    checked beside the one serving), V(live) (the release is the one serving), V(absent) (the instance is to be
    removed, nothing to stage), V(failed) or V(unreachable).
    A host without an outcome is listed under C(missing).
extends_documentation_fragment:
  - graceful.gunicorn.rollout_hosts
"""

EXAMPLES = r"""
- name: Say how far staging got
  run_once: true
  ansible.builtin.debug:
    msg: "{{ (hostvars | graceful.gunicorn.rollout_stage_report(ansible_play_hosts_all)).line }}"
"""

RETURN = r"""
_value:
  description: The hosts by outcome, and a summary line.
  type: dict
  contains:
    staged:
      description: Hosts with the release installed and checked beside the one serving.
      type: list
      elements: str
    live:
      description: Hosts that already serve the release.
      type: list
      elements: str
    absent:
      description: Hosts whose instance is to be removed.
      type: list
      elements: str
    failed:
      description: Hosts where staging failed.
      type: list
      elements: str
    unreachable:
      description: Hosts that did not answer.
      type: list
      elements: str
    missing:
      description: Hosts that noted no outcome.
      type: list
      elements: str
    count:
      description: The number of hosts.
      type: int
    ready:
      description: The number of hosts staged, live or to be removed.
      type: int
    line:
      description: "For example C(staged on 9 of 10 hosts; not staged: web3)."
      type: str
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text

STAGE_OUTCOMES = ("staged", "live", "absent", "failed", "unreachable")


def rollout_stage_report(hostvars, hosts):
    """The stage play's outcome per kind: {staged, live, failed, unreachable, missing: [hosts], count, line}.

    Each host notes its outcome in the fact __gunicorn_rollout_stage; a host without one ended its part some
    other way and is listed under missing.
    """
    if isinstance(hosts, (str, bytes)):
        raise AnsibleFilterError("rollout_stage_report: hosts must be a list of host names, got a string")
    if not isinstance(hostvars, Mapping):
        raise AnsibleFilterError("rollout_stage_report: the input must be the hosts' variables (hostvars)")
    report = dict((outcome, []) for outcome in (*STAGE_OUTCOMES, "missing"))
    for host in hosts:
        outcome = to_text(hostvars.get(host, {}).get("__gunicorn_rollout_stage") or "")
        report[outcome if outcome in STAGE_OUTCOMES else "missing"].append(to_text(host))
    ready = len(report["staged"]) + len(report["live"]) + len(report["absent"])
    line = "staged on %d of %d hosts" % (ready, len(hosts))
    notes = []
    if report["live"]:
        notes.append("%d already serve it" % len(report["live"]))
    if report["absent"]:
        notes.append("%d to be removed" % len(report["absent"]))
    if notes:
        line += " (%s)" % ", ".join(notes)
    not_ready = report["failed"] + report["unreachable"] + report["missing"]
    if not_ready:
        line += "; not staged: %s" % ", ".join(sorted(not_ready))
    report.update(count=len(hosts), ready=ready, line=line)
    return report


class FilterModule(object):
    def filters(self):
        return {"rollout_stage_report": rollout_stage_report}
