# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: python_literal
author: graceful.gunicorn contributors
version_added: 0.1.0
short_description: Render a value as a Python literal
description:
  - Renders data (as read from YAML or JSON) as Python source text that C(ast.literal_eval) reads back
    to the same value, for writing Python configuration files such as C(gunicorn.conf.py).
  - V(true), V(false) and V(null) become C(True), C(False) and C(None); strings are quoted with Python's
    own escaping, so quotes, backslashes and newlines in a value cannot break out of the literal.
  - Mappings become dicts (keys keep their order), lists and sets become lists.
  - Anything else (objects, NaN, infinities) is refused with an error rather than rendered unsafely.
options:
  _input:
    description: The value to render.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Write one setting per line
  ansible.builtin.copy:
    dest: /etc/gunicorn/demo/gunicorn.conf.py
    content: |
      {% for key, value in settings.items() %}
      {{ key }} = {{ value | graceful.gunicorn.python_literal }}
      {% endfor %}
    mode: "0640"

# "It's \"quoted\"" | graceful.gunicorn.python_literal  ->  'It\'s "quoted"'
# {"a": [1, true, null]} | graceful.gunicorn.python_literal  ->  {'a': [1, True, None]}
"""

RETURN = r"""
_value:
  description: Python source text for the value.
  type: str
"""

import math
from collections.abc import Mapping, Set

from ansible.errors import AnsibleFilterError


def _text(value):
    # str.__str__ returns an exact str even for Ansible's tagged or unsafe str subclasses, whose repr
    # could otherwise differ from a plain literal.
    return repr(str.__str__(value))


def _render(value, path):
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AnsibleFilterError("python_literal: %s is %r, which has no Python literal" % (path, value))
        return repr(float(value))
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bytes):
        return _text(value.decode("utf-8"))
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if isinstance(key, (Mapping, list, tuple, Set)):
                raise AnsibleFilterError("python_literal: %s has a key of type %s" % (path, type(key).__name__))
            items.append("%s: %s" % (_render(key, path), _render(item, "%s[%r]" % (path, key))))
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple, Set)):
        seq = sorted(value, key=repr) if isinstance(value, Set) else value
        return "[" + ", ".join(_render(item, "%s[%d]" % (path, i)) for i, item in enumerate(seq)) + "]"
    raise AnsibleFilterError("python_literal: %s is a %s, which has no Python literal" % (path, type(value).__name__))


def python_literal(value):
    """Python source text that evaluates to ``value``."""
    return _render(value, "value")


class FilterModule(object):
    def filters(self):
        return {"python_literal": python_literal}
