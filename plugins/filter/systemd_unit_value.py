# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: systemd_unit_value
author: graceful.gunicorn contributors
version_added: 0.2.0
short_description: Escape a value for a systemd unit file, or refuse it when it cannot be written safely
description:
  - Escapes C(%) as C(%%), so systemd does not expand specifiers in it, and, in a command line (O(kind=exec)),
    C($) as C($$), so systemd does not substitute environment variables.
  - Refuses control characters (systemd reads a carriage return, like a newline, as the end of a line, so a value
    holding one could add directives such as C(User=root)) and backslashes (escapes, and a line continuation at the
    end of a line). For O(kind=word) and O(kind=exec) it also refuses whitespace and quotes, which would split the
    value into several words or be removed by systemd's unquoting.
options:
  _input:
    description: The value.
    type: raw
    required: true
  kind:
    description:
      - V(value) the rest of a line, such as C(Description=).
      - V(word) one word of a directive that splits on whitespace or unquotes, such as C(User=),
        C(ReadWritePaths=) or C(Environment=).
      - V(exec) one argument of an C(Exec*=) command line.
      - V(line) a whole C(Key=value) line written as given (no escaping; only the refusals).
    type: str
    default: value
    choices: [value, word, exec, line]
"""

EXAMPLES = r"""
# "50% off" | graceful.gunicorn.systemd_unit_value                  ->  "50%% off"
# "app:$HOME" | graceful.gunicorn.systemd_unit_value(kind='exec')    ->  "app:$$HOME"
# "app\rUser=root" | graceful.gunicorn.systemd_unit_value           ->  error
"""

RETURN = r"""
_value:
  description: The escaped value.
  type: str
"""

import re

from ansible.errors import AnsibleFilterError

_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
_SPACE_OR_QUOTE = re.compile(r"[\s'\"]")
_KINDS = ("value", "word", "exec", "line")


def systemd_unit_value(value, kind="value"):
    """``value`` escaped for a unit file as ``kind``; AnsibleFilterError when it cannot be."""
    if kind not in _KINDS:
        raise AnsibleFilterError("systemd_unit_value: kind must be one of %s, not %r" % (", ".join(_KINDS), kind))
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list, tuple)):
        raise AnsibleFilterError("systemd_unit_value: expected a string or a number, got %s" % type(value).__name__)
    text = str.__str__(value) if isinstance(value, str) else str(value)
    if _CONTROL.search(text):
        raise AnsibleFilterError(
            "systemd_unit_value: %r contains a control character (newline, carriage return, ...), which would end the "
            "unit's line" % text[:80]
        )
    if "\\" in text:
        raise AnsibleFilterError("systemd_unit_value: %r contains a backslash" % text[:80])
    if kind == "line":
        return text
    if kind in ("word", "exec") and (text == "" or _SPACE_OR_QUOTE.search(text) or text == ";"):
        raise AnsibleFilterError(
            "systemd_unit_value: %r is not one word (empty, or whitespace, quotes or a lone ';' in it)" % text[:80]
        )
    text = text.replace("%", "%%")
    if kind == "exec":
        text = text.replace("$", "$$")
    return text


class FilterModule(object):
    def filters(self):
        return {"systemd_unit_value": systemd_unit_value}
