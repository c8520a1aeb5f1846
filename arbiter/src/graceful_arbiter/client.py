"""A stdlib client for the master's control socket (gunicorn's ctl wire protocol).

Wire protocol: each message is a 4-byte big-endian length followed by that many bytes of UTF-8
JSON. Request: {"id": N, "command": "graceful status"}. Reply: {"id": N, "status": "ok",
"data": {...}} or {"id": N, "status": "error", "error": "..."}.

    >>> from graceful_arbiter.client import request
    >>> request("/run/gunicorn-app/control.1234.sock", "graceful status")["workers"]

Command line: python -m graceful_arbiter.client SOCKET [COMMAND...] (default: graceful status).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
import time

MAX_MESSAGE = 16 * 1024 * 1024


class ControlError(Exception):
    """The master answered with an error, or not at all."""


def master_socket_path(control_socket: str, pid: int) -> str:
    """The per-master socket of master `pid`: <dir>/<stem>.<pid><suffix> of `control_socket`.

    /run/gunicorn-app/control.sock -> /run/gunicorn-app/control.1234.sock
    """
    directory, name = os.path.split(control_socket)
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem:
        return os.path.join(directory, f"{name}.{pid}")
    return os.path.join(directory, f"{stem}.{pid}.{suffix}")


def read_pidfile(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        chunk = sock.recv(size)
        if not chunk:
            raise ControlError("the master closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def request(socket_path: str, command: str, timeout: float = 10.0, connect_retry: float = 3.0) -> dict:
    """Send one command, return the reply's data; raise ControlError on an error reply.

    A starting master opens its socket only after some of its setup (gunicorn 27: once its first
    workers are spawned), so a refused or missing socket is retried for `connect_retry` seconds.
    """
    deadline = time.monotonic() + connect_retry
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
    with sock:
        payload = json.dumps({"id": 1, "command": command}).encode()
        sock.sendall(struct.pack(">I", len(payload)) + payload)
        (length,) = struct.unpack(">I", _recv_exactly(sock, 4))
        if length > MAX_MESSAGE:
            raise ControlError(f"reply too large: {length} bytes")
        reply = json.loads(_recv_exactly(sock, length))
    if reply.get("status") != "ok":
        raise ControlError(reply.get("error", "unknown error"))
    return reply.get("data", {})


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m graceful_arbiter.client SOCKET [COMMAND...]", file=sys.stderr)
        return 2
    command = " ".join(argv[1:]) or "graceful status"
    try:
        data = request(argv[0], command)
    except (OSError, ControlError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
