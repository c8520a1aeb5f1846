# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: systemd_env_quote
author: graceful.gunicorn contributors
version_added: 0.1.0
short_description: Quote a value for a systemd EnvironmentFile that a POSIX shell also reads back unchanged
description:
  - Wraps the value in double quotes and escapes C(\\), C("), C($) and C(`) with a backslash.
    systemd's C(EnvironmentFile=) parser and C(sh)'s C(.) command both read the result back as the
    original value, so the same file serves the unit and a shell that checks the app before a change.
  - Booleans become V(true)/V(false), null an empty string; NUL, newline and carriage return characters are
    refused (systemd reads a carriage return as a line end, and the file holds one variable per line).
options:
  _input:
    description: The value.
    type: raw
    required: true
"""

EXAMPLES = r"""
- name: Write an environment file
  ansible.builtin.copy:
    dest: /etc/gunicorn/demo/environment
    content: |
      {% for key, value in env.items() %}
      {{ key }}={{ value | graceful.gunicorn.systemd_env_quote }}
      {% endfor %}
    mode: "0640"
  no_log: true

# 'pa$$ "word"' | graceful.gunicorn.systemd_env_quote  ->  "pa\$\$ \"word\""
"""

RETURN = r"""
_value:
  description: The quoted value.
  type: str
"""

from ansible.errors import AnsibleFilterError

_ESCAPED = ("\\", '"', "$", "`")


def systemd_env_quote(value):
    """``value`` as a double-quoted EnvironmentFile value."""
    if value is None:
        text = ""
    elif isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = str.__str__(value) if isinstance(value, str) else str(value)
    if "\0" in text or "\n" in text or "\r" in text:
        raise AnsibleFilterError(
            "systemd_env_quote: environment values cannot contain NUL, newline or carriage return characters"
        )
    for char in _ESCAPED:
        text = text.replace(char, "\\" + char)
    return '"' + text + '"'


class FilterModule(object):
    def filters(self):
        return {"systemd_env_quote": systemd_env_quote}
