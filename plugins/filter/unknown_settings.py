# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: unknown_settings
author: graceful.gunicorn contributors
version_added: 0.1.0
short_description: List gunicorn setting names that gunicorn would not know, with the nearest valid name
description:
  - Checks setting names against the names of gunicorn 27.0.1 (C(gunicorn.config.KNOWN_SETTINGS)) and the
    extra settings of the collection's bundled arbiter.
  - gunicorn silently ignores unknown names in a configuration file, so a misspelt setting would be dropped
    without a word; this filter lets a play refuse it on the controller before any host changes.
  - Returns one entry per unknown name, in input order, with the nearest known name found by C(difflib).
options:
  _input:
    description: Setting names, as a list, or as a mapping whose keys are the names.
    type: raw
    required: true
  extra:
    description: Further names to accept, for settings registered by your own code.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Refuse misspelt gunicorn settings
  vars:
    unknown: "{{ gunicorn_settings | graceful.gunicorn.unknown_settings }}"
  ansible.builtin.assert:
    that: unknown | length == 0
    fail_msg: >-
      {% for u in unknown %}unknown gunicorn setting '{{ u.name }}'{% if u.suggestion %}:
      did you mean '{{ u.suggestion }}'?{% endif %} {% endfor %}

# {"worker": 4, "timeout": 30} | graceful.gunicorn.unknown_settings
#   -> [{"name": "worker", "suggestion": "workers"}]
"""

RETURN = r"""
_value:
  description: The unknown names, each with the nearest known name (or null when none is close).
  type: list
  elements: dict
  contains:
    name:
      description: The unknown name as given.
      type: str
    suggestion:
      description: The nearest known setting name, or null.
      type: str
"""

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError
from ansible_collections.graceful.gunicorn.plugins.module_utils.gunicorn_settings import (
    unknown_settings as _unknown_settings,
)


def unknown_settings(names, extra=None):
    """The names in ``names`` that are not gunicorn or arbiter settings, with suggestions."""
    if isinstance(names, Mapping):
        names = list(names.keys())
    elif isinstance(names, str) or not hasattr(names, "__iter__"):
        raise AnsibleFilterError("unknown_settings expects a mapping or a list of names, got %s" % type(names).__name__)
    return _unknown_settings([str(name) for name in names], extra=[str(e) for e in (extra or [])])


class FilterModule(object):
    def filters(self):
        return {"unknown_settings": unknown_settings}
