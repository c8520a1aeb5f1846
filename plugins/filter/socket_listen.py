# -*- coding: utf-8 -*-
# Copyright: graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: socket_listen
author: graceful.gunicorn contributors
version_added: 0.2.0
short_description: What a systemd socket unit listens on for one bind of gunicorn_bind
description:
  - Returns the C(ListenStream=) value and the address family of a bind.
  - systemd listens on addresses, not names; C(localhost) becomes C(127.0.0.1) and an empty host C(0.0.0.0), as
    gunicorn reads them. Any other host name, and anything that is not a whole bind, is refused.
options:
  _input:
    description: One entry of C(gunicorn_bind).
    type: str
    required: true
"""

EXAMPLES = r"""
# "127.0.0.1:8000" | graceful.gunicorn.socket_listen  ->  {"address": "127.0.0.1:8000", "family": "ipv4"}
# "[::1]:8000" | graceful.gunicorn.socket_listen  ->  {"address": "[::1]:8000", "family": "ipv6"}
# "unix:/run/gunicorn-api/gunicorn.sock" | graceful.gunicorn.socket_listen
#   ->  {"address": "/run/gunicorn-api/gunicorn.sock", "family": "unix"}
"""

RETURN = r"""
_value:
  description: C(address) (for C(ListenStream=)) and C(family) (C(ipv4), C(ipv6) or C(unix)).
  type: dict
"""

import re

from ansible.errors import AnsibleFilterError

IPV4_RE = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}")
TCP_RE = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]{2,45}\]|[0-9.]{7,15}|localhost|):(?P<port>[0-9]{1,5})")
UNIX_RE = re.compile(r"unix:(?P<path>/[A-Za-z0-9_.@/+-]{1,106})")


def socket_listen(bind):
    """What a socket unit's ``ListenStream=`` takes for a bind of gunicorn_bind, and its family.

    Returns ``{"address": ..., "family": "unix" | "ipv4" | "ipv6"}``. systemd listens only on addresses, not
    names: ``localhost`` becomes 127.0.0.1 and an empty host 0.0.0.0 (gunicorn's reading of both); any
    other name is refused.
    """
    if not isinstance(bind, str):
        raise AnsibleFilterError("socket_listen: the bind must be a string, not %r" % (bind,))
    unix = UNIX_RE.fullmatch(bind)
    if unix:
        return {"address": unix.group("path"), "family": "unix"}
    tcp = TCP_RE.fullmatch(bind)
    if not tcp or not 1 <= int(tcp.group("port")) <= 65535:
        raise AnsibleFilterError(
            "socket_listen: %r is not an address systemd can listen on: give IPV4:PORT, [IPV6]:PORT or "
            "unix:/run/gunicorn-<instance>/NAME.sock (no host names other than localhost)" % (bind,)
        )
    host, port = tcp.group("host"), int(tcp.group("port"))
    if host.startswith("["):
        return {"address": "%s:%d" % (host, port), "family": "ipv6"}
    host = {"": "0.0.0.0", "localhost": "127.0.0.1"}.get(host, host)
    if not IPV4_RE.fullmatch(host) or any(int(part) > 255 for part in host.split(".")):
        raise AnsibleFilterError("socket_listen: %r does not hold an IPv4 address" % (bind,))
    return {"address": "%s:%d" % (host, port), "family": "ipv4"}


class FilterModule(object):
    def filters(self):
        return {"socket_listen": socket_listen}
