# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: instance_problems
author: graceful.gunicorn contributors
version_added: 0.2.0
short_description: Every problem with the server role's variables, each naming the variable and the fix
description:
  - Checks the resolved variables of one instance of the C(graceful.gunicorn.server) role on the controller, before
    any host is contacted. Every value that reaches the systemd unit, a path, a command line, the environment file
    or C(gunicorn.conf.py) is matched as a whole string (a trailing newline or carriage return is refused).
  - Returns a list of sentences, each starting with the variable's name (C(gunicorn_bind[1]),
    C(gunicorn_settings.backlog), ...), saying what is wrong and how to fix it. An empty list means all is well.
  - The role's C(tasks/validate.yml) and the rollout playbooks' first play assert that the list is empty.
options:
  _input:
    description:
      - 'The variables by name, for example C({"gunicorn_instance": "api", "gunicorn_app": "myapi:app"}).
        Missing or null values count as unset.'
    type: dict
    required: true
  scope:
    description:
      - V(role) checks everything the role uses. V(instance) checks only what the actions that do not install read
        (instance name, bases, health check flag, bake time and releases kept), as rollback, reload and refresh do.
    type: str
    default: role
    choices: [role, instance]
"""

EXAMPLES = r"""
- name: Refuse bad variables before anything changes
  vars:
    problems: >-
      {{ {'gunicorn_instance': gunicorn_instance, 'gunicorn_app': gunicorn_app}
         | graceful.gunicorn.instance_problems }}
  ansible.builtin.assert:
    that: problems | length == 0
    fail_msg: "{{ problems | join(' ') }}"

# {"gunicorn_instance": "api", "gunicorn_app": "app\rUser=root", ...} | graceful.gunicorn.instance_problems
#   -> ['gunicorn_app ("app\\rUser=root") is not module:callable; give a dotted module, ...']
"""

RETURN = r"""
_value:
  description: One sentence per problem, in the order of the checks; empty when every value is fine.
  type: list
  elements: str
"""

from ansible_collections.graceful.gunicorn.plugins.plugin_utils.gunicorn_checks import instance_problems


class FilterModule(object):
    def filters(self):
        return {"instance_problems": instance_problems}
