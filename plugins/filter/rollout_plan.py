# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: rollout_plan
author: graceful.gunicorn contributors
version_added: 0.2.0
short_description: What a host's turn in a rollout has to do, from what the stage play saw on the host
description:
  - Used by the stage play of the collection's deploy and upgrade playbooks, once the release is staged on a host
    (or found serving there), to decide how much of the server role the host's turn runs.
  - V(none) when the host already runs what the rollout asks for, byte for byte; the turn only records that.
  - V(switch) when the release is staged and only the release differs, that is the configuration and the instance
    manifest, which name the release, and perhaps the environment file (the staged release was checked with it);
    the service, its unit and socket units are as the rollout wants them, no restart is owed and the master holds
    systemd's listeners if it is to. The turn then only puts the checked configuration (and the environment) in
    place, swaps C(current) and upgrades the master with SIGUSR2.
  - V(environment) when the host runs the release as wanted but for its environment file; the turn writes it and
    applies it as the whole role would, a reload, or an upgrade when the app is preloaded.
  - V(full) in every other case, with the reasons; the turn runs the whole server role, which works out and
    applies the least disruptive action.
  - The observation is the output of the server role's probe (C(tasks/plan.yml)), one C(key=value) line per fact,
    files as C(file=PATH TAB MODE TAB OWNER TAB GROUP TAB SHA1), or C(file=PATH TAB -) when there is no regular file.
options:
  _input:
    description: The probe's standard output.
    type: str
    required: true
  wanted:
    description: What the rollout wants on the host.
    type: dict
    required: true
    suboptions:
      files:
        description:
          - The files the role writes, by path, each a dict of C(mode) (octal text), C(owner), C(group), C(sha1).
        type: dict
      release_files:
        description: Those of O(wanted.files) that name the release, and may differ for V(switch).
        type: list
        elements: str
      environment_file:
        description: The one of O(wanted.files) that is the environment file, which V(switch) and V(environment) write.
        type: str
      socket_units:
        description: The paths of the socket units the instance has, empty without socket activation.
        type: list
        elements: str
      socket_activation:
        description: Whether the master is to hold systemd's listeners.
        type: bool
      service_enabled:
        description:
          - Whether the service is to start at boot (C(systemctl is-enabled) says V(enabled), else V(disabled)).
        type: bool
      release:
        description: The release's name.
        type: str
      release_dir:
        description: The release's directory, which C(current) is to name.
        type: str
      installed:
        description: The fingerprint of the release's install (packages, interpreter, arbiter wheel).
        type: str
  master_release:
    description: The release the running master runs, from graceful.gunicorn.gunicorn_info, empty when unknown.
    type: str
    default: ''
  upgrade_in_flight:
    description: Whether a second master is running (an upgrade not finished).
    type: bool
    default: false
  healthy:
    description: Whether the app passed its health check when the master was inspected (true when it has none).
    type: bool
    default: true
  staged:
    description: Whether this rollout installed and checked the release on the host (its stage play); a switch needs it.
    type: bool
    default: false
  check_mode:
    description: Whether the play runs in check mode, where the turn runs the whole role to report.
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Decide what the turn does
  ansible.builtin.set_fact:
    turn_plan: "{{ probe.stdout | graceful.gunicorn.rollout_plan(wanted, master_release=info.master.release) }}"
"""

RETURN = r"""
_value:
  description: The plan.
  type: dict
  contains:
    plan:
      description: V(none), V(switch), V(environment) or V(full).
      type: str
    environment:
      description: Whether the turn writes the environment file (V(switch) and V(environment) only).
      type: bool
    reasons:
      description: Why the turn cannot do less, empty for V(none) and V(switch).
      type: list
      elements: str
    summary:
      description: The plan in a few words, for the turn's progress line.
      type: str
"""

import posixpath

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text

PLANS = ("none", "switch", "full")


def parse_probe(text):
    """The probe's lines as a dict; files and socket units keyed by path."""
    observed = {"files": {}, "sockets": set()}
    for line in to_text(text).splitlines():
        key, sep, value = line.partition("=")
        if not sep:
            continue
        if key == "file":
            fields = value.split("\t")
            if len(fields) == 5:
                path, mode, owner, group, sha1 = fields
                observed["files"][path] = {"mode": mode, "owner": owner, "group": group, "sha1": sha1}
            elif len(fields) == 2 and fields[1] == "-":
                observed["files"][fields[0]] = None
            else:
                # the line itself stays out of the message: it holds sha1 sums of files that may hold secrets
                raise AnsibleFilterError(
                    "rollout_plan: a file line of the probe has %d fields, not 5 or 2" % len(fields)
                )
        elif key == "socket":
            observed["sockets"].add(value)
        else:
            observed[key] = value
    return observed


def same_file(observed, wanted):
    if observed is None:
        return False
    return (
        observed["sha1"] == wanted["sha1"]
        and int(observed["mode"], 8) == int(to_text(wanted["mode"]), 8)
        and observed["owner"] == wanted["owner"]
        and observed["group"] == wanted["group"]
    )


def summary(plan, reasons, environment):
    if plan == "none":
        return "nothing to change"
    if plan == "switch":
        return "switch to the staged release" + (", with the new environment" if environment else "")
    if plan == "environment":
        return "apply the new environment"
    more = " (and %d more)" % (len(reasons) - 1) if len(reasons) > 1 else ""
    return "the whole role, %s%s" % (reasons[0], more)


def rollout_plan(
    probe_output, wanted, master_release="", upgrade_in_flight=False, healthy=True, staged=False, check_mode=False
):
    plan, reasons, environment = decide(
        probe_output, wanted, master_release, upgrade_in_flight, healthy, staged, check_mode
    )
    return {
        "plan": plan,
        "reasons": reasons,
        "environment": environment,
        "summary": summary(plan, reasons, environment),
    }


def decide(probe_output, wanted, master_release, upgrade_in_flight, healthy, staged, check_mode):
    for key in ("files", "release_dir", "installed"):
        if key not in wanted:
            raise AnsibleFilterError("rollout_plan: wanted has no %r" % key)
    observed = parse_probe(probe_output)
    release_files = set(wanted.get("release_files", []))
    reasons = []
    if check_mode:
        reasons.append("check mode")
    if observed.get("active") != "active":
        reasons.append("the service is %s" % (observed.get("active") or "unknown"))
    if "service_enabled" in wanted:
        enabled_wanted = "enabled" if wanted["service_enabled"] else "disabled"
        if observed.get("enabled") != enabled_wanted:
            reasons.append("the service is %s at boot, not %s" % (observed.get("enabled") or "unknown", enabled_wanted))
    if not healthy:
        reasons.append("the app does not pass its health check")
    if observed.get("marker") != "no":
        reasons.append("a restart is owed")
    if wanted.get("socket_activation") and observed.get("listeners") != "yes":
        reasons.append("the master does not hold systemd's listeners")
    if upgrade_in_flight:
        reasons.append("an upgrade is in flight")
    if observed.get("installed", "") != wanted["installed"]:
        reasons.append("the release is not installed as wanted")
    if observed["sockets"] != set(wanted.get("socket_units", [])):
        reasons.append("the socket units differ")
    environment_file = wanted.get("environment_file")
    for path, want in sorted(wanted["files"].items()):
        if path in release_files or path == environment_file:
            continue
        if not same_file(observed["files"].get(path), want):
            reasons.append("%s differs" % posixpath.basename(path))
    environment_same = environment_file is None or same_file(
        observed["files"].get(environment_file), wanted["files"].get(environment_file)
    )
    if reasons:
        if not environment_same:
            reasons.append("%s differs" % posixpath.basename(environment_file))
        return "full", reasons, False
    if observed.get("current") != wanted["release_dir"]:
        if not staged:
            return "full", ["the release is not staged by this rollout"], False
        # Only what names the release, and the environment, may differ: the staged release was checked with both.
        return "switch", [], not environment_same
    release_same = all(same_file(observed["files"].get(path), wanted["files"][path]) for path in release_files)
    if not release_same:
        return "full", ["the configuration differs"], False
    if to_text(master_release) != to_text(wanted.get("release", "")):
        return "full", ["the master runs %s" % (master_release or "an unknown release")], False
    if environment_same:
        return "none", [], False
    return "environment", [], True


class FilterModule(object):
    def filters(self):
        return {"rollout_plan": rollout_plan}
