# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: rollout_stage
author: graceful.gunicorn contributors
version_added: 0.2.0
short_description: Whether a rollout stages its release on every host before the first switch
description:
  - Used by the collection's deploy and upgrade playbooks when they record the checked rollout settings.
  - Staging installs the release on every target host at once (the wheelhouse artifact, the venv, the
    configuration check) before the first host switches, so that each host's turn only switches and a host that
    cannot install the release stops the rollout before any host has moved.
  - With O(_input=auto) a rollout stages when it has more than one batch, that is when O(serial)'s first batch is
    smaller than O(host_count). A rollout of one batch switches every host in the same turn, so staging would only
    add a pass, unless it runs tasks before the first switch (O(before_switch)), which need the release installed
    first. V(true) and V(false) decide outright. Only the C(deploy) and C(upgrade) actions install, so no
    other action stages.
options:
  _input:
    description: The C(gunicorn_stage) setting, V(auto), V(true) or V(false).
    type: raw
    required: true
  action:
    description: The rollout's action.
    type: str
    required: true
  serial:
    description: The play's C(serial), as Ansible takes it, an integer, a percentage such as C(30%), or a list of them.
    type: raw
    required: true
  host_count:
    description: The number of hosts the rollout targets.
    type: int
    required: true
  before_switch:
    description: Whether the rollout runs tasks before the first switch (C(gunicorn_before_switch_tasks)).
    type: bool
    default: false
"""

EXAMPLES = r"""
- name: Record whether the rollout stages
  ansible.builtin.set_fact:
    rollout_stages: >-
      {{ gunicorn_stage | default('auto') | graceful.gunicorn.rollout_stage('upgrade', gunicorn_serial | default(1),
         ansible_play_hosts_all | length) }}
"""

RETURN = r"""
_value:
  description: Whether to stage.
  type: bool
"""

from ansible.errors import AnsibleFilterError
from ansible.module_utils.common.text.converters import to_text
from ansible.module_utils.parsing.convert_bool import BOOLEANS_FALSE, BOOLEANS_TRUE

STAGING_ACTIONS = ("deploy", "upgrade")


def first_batch(serial, host_count):
    """The size of a play's first batch, as Ansible works it out: a percentage is floored, and at least 1."""
    if isinstance(serial, (list, tuple)):
        if not serial:
            return host_count
        serial = serial[0]
    text = to_text(serial).strip()
    percentage = text.endswith("%")
    try:
        size = int(float(text[:-1]) / 100.0 * host_count) if percentage else int(text)
    except ValueError:
        raise AnsibleFilterError(
            "rollout_stage: serial must be a number, a percentage or a list, got %r" % (serial,)
        ) from None
    if size <= 0:
        # Ansible takes a serial of 0 as every host at once, and a percentage as at least one host.
        return 1 if percentage else host_count
    return size


def rollout_stage(setting, action, serial, host_count, before_switch=False):
    if isinstance(setting, bool):
        decided = setting
    elif to_text(setting).strip().lower() == "auto":
        decided = None
    elif to_text(setting).strip().lower() in BOOLEANS_TRUE:
        decided = True
    elif to_text(setting).strip().lower() in BOOLEANS_FALSE:
        decided = False
    else:
        raise AnsibleFilterError("rollout_stage: gunicorn_stage must be auto, true or false, got %r" % (setting,))
    if action not in STAGING_ACTIONS:
        return False
    if decided is not None:
        return decided
    return bool(before_switch) or first_batch(serial, int(host_count)) < int(host_count)


class FilterModule(object):
    def filters(self):
        return {"rollout_stage": rollout_stage}
