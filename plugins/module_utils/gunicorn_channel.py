# -*- coding: utf-8 -*-
# Copyright (c) graceful.gunicorn contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The bundled arbiter's status and refresh channel: gunicorn's control socket protocol, stdlib only.

Each master of the bundled arbiter listens on its own socket, <dir>/<stem>.<pid>.<ext> of the configured
control_socket path. A message is a 4-byte big-endian length and that many bytes of UTF-8 JSON; a request is
{"id": N, "command": "graceful status"}, a reply {"id": N, "status": "ok", "data": {...}} or
{"status": "error", "error": "..."}.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import socket
import struct

MAX_MESSAGE = 16 * 1024 * 1024


class ChannelError(Exception):
    """The channel is missing, refused, or answered with an error."""


def master_socket_path(control_socket, pid):
    """/run/gunicorn-app/gunicorn.ctl and 1234 -> /run/gunicorn-app/gunicorn.1234.ctl"""
    directory, name = os.path.split(control_socket)
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        return os.path.join(directory, "%s.%d" % (name, pid))
    return os.path.join(directory, "%s.%d.%s" % (stem, pid, suffix))


def encode(command, request_id=1):
    payload = json.dumps({"id": request_id, "command": command}).encode("utf-8")
    return struct.pack(">I", len(payload)) + payload


def decode_reply(payload):
    """The data of a reply, or ChannelError for an error reply."""
    reply = json.loads(payload.decode("utf-8"))
    if reply.get("status") != "ok":
        raise ChannelError(reply.get("error") or "error reply without a message")
    return reply.get("data") or {}


def _recv(sock, size):
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ChannelError("the master closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def request(path, command, timeout=5.0):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (OSError, socket.timeout) as exc:
            raise ChannelError("cannot connect to %s: %s" % (path, exc)) from None
        sock.sendall(encode(command))
        (length,) = struct.unpack(">I", _recv(sock, 4))
        if length > MAX_MESSAGE:
            raise ChannelError("reply too large: %d bytes" % length)
        return decode_reply(_recv(sock, length))
    except (OSError, socket.timeout, ValueError) as exc:
        raise ChannelError("%s: %s" % (path, exc)) from None
    finally:
        sock.close()


def status(control_socket, pid, timeout=5.0, memory=True):
    """The master's `graceful status`, or None when it has no reachable channel.

    memory=False asks for `graceful status brief`, without each process's RSS and PSS, which the
    master reads from /proc at every call: the form for polling during an operation. An arbiter
    that predates the option ignores it and answers with memory."""
    if not control_socket or not pid:
        return None
    command = "graceful status" if memory else "graceful status brief"
    try:
        return request(master_socket_path(control_socket, pid), command, timeout)
    except ChannelError:
        return None


def refresh(control_socket, pid, timeout=5.0):
    """Ask for a rolling refresh; returns {'accepted', 'request_id', 'in_progress'}. Raises ChannelError."""
    return request(master_socket_path(control_socket, pid), "graceful refresh", timeout)


def ready_pids(status_data):
    """PIDs of the workers the arbiter reports ready (booted and serving, not retiring)."""
    return sorted(w["pid"] for w in (status_data or {}).get("workers", []) if w.get("state") == "ready")
