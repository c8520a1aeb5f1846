# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: rollout_problems
author: graceful.gunicorn contributors
version_added: 0.2.0
short_description: Every problem with a rollout playbook's own variables
description:
  - Checks the variables of the collection's rollout playbooks (C(gunicorn_target), C(gunicorn_serial),
    C(gunicorn_max_fail_percentage), C(gunicorn_bake_seconds), C(gunicorn_keep_releases), C(gunicorn_release),
    C(gunicorn_rollback_release), C(gunicorn_app_package), the drain, undrain and summary file names) as whole
    strings, on the controller.
  - Returns one sentence per problem, each starting with the variable's name; an empty list means all is well.
options:
  _input:
    description: The variables by name; missing or null values count as unset.
    type: dict
    required: true
  action:
    description: The rollout's action.
    type: str
    required: true
    choices: [deploy, upgrade, rollback, reload, refresh]
"""

EXAMPLES = r"""
- name: Check the rollout's variables
  vars:
    problems: >-
      {{ {'gunicorn_serial': gunicorn_serial | default(none)} | graceful.gunicorn.rollout_problems('upgrade') }}
  ansible.builtin.assert:
    that: problems | length == 0
    fail_msg: "{{ problems | join(' ') }}"
"""

RETURN = r"""
_value:
  description: One sentence per problem; empty when every value is fine.
  type: list
  elements: str
"""

from ansible_collections.graceful.gunicorn.plugins.plugin_utils.gunicorn_checks import rollout_problems


class FilterModule(object):
    def filters(self):
        return {"rollout_problems": rollout_problems}
