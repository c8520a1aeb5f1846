# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: socket_unit_name
author: graceful.gunicorn contributors
version_added: 0.2.0
short_description: The name of the systemd socket unit that holds one bind of an instance
description:
  - Returns C(<service>-listen-<h>) where C(<h>) is the first 8 hex digits of the SHA-256 of the bind, so that
    every address of C(gunicorn_bind) gets a socket unit of its own whose name stays the same as long as the
    address does. A socket unit is never restarted while its address is kept, so its queued connections survive
    a restart of the service.
  - Refuses a service name that is not C(gunicorn-) followed by an instance name, and an empty bind.
options:
  _input:
    description: The service name, C(gunicorn-<instance>).
    type: str
    required: true
  bind:
    description:
      - One entry of C(gunicorn_bind), as written there (C(HOST:PORT), C([V6]:PORT) or C(unix:/path)), or a list of
        them (the result is then the list of names, in the same order).
    type: raw
    required: true
"""

EXAMPLES = r"""
# "gunicorn-api" | graceful.gunicorn.socket_unit_name("127.0.0.1:8000")  ->  "gunicorn-api-listen-<8 hex digits>"
# "gunicorn-api" | graceful.gunicorn.socket_unit_name(["127.0.0.1:8000", "[::1]:8000"])  ->  [name, name]
"""

RETURN = r"""
_value:
  description: The unit name without the C(.socket) suffix (a list of them for a list of binds).
  type: raw
"""

import hashlib
import re

from ansible.errors import AnsibleFilterError

SERVICE_RE = re.compile(r"gunicorn-[a-z0-9][a-z0-9_-]{0,39}")


def socket_unit_name(service, bind):
    """``<service>-listen-<first 8 hex of sha256(bind)>``, or a list of them for a list of binds."""
    if not isinstance(service, str) or not SERVICE_RE.fullmatch(service):
        raise AnsibleFilterError(
            "socket_unit_name: the service must be gunicorn-<instance> (lower case letters, digits, '-', '_'), not %r"
            % (service,)
        )
    if isinstance(bind, (list, tuple)):
        return [socket_unit_name(service, item) for item in bind]
    if not isinstance(bind, str) or bind == "":
        raise AnsibleFilterError("socket_unit_name: the bind must be a non-empty string, not %r" % (bind,))
    digest = hashlib.sha256(bind.encode("utf-8")).hexdigest()[:8]
    return "%s-listen-%s" % (service, digest)


class FilterModule(object):
    def filters(self):
        return {"socket_unit_name": socket_unit_name}
