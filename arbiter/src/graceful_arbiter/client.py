"""A stdlib client for the master's control socket (gunicorn's ctl wire protocol).

Wire protocol: each message is a 4-byte big-endian length followed by that many bytes of UTF-8
JSON. Request: {"id": N, "command": "graceful status"}. Reply: {"id": N, "status": "ok",
"data": {...}} or {"id": N, "status": "error", "error": "..."}.

    >>> from graceful_arbiter.client import request
    >>> request("/run/gunicorn-app/control.1234.sock", "graceful status")["workers"]

Command line: python -m graceful_arbiter.client [--pid PID] SOCKET [COMMAND...] (default: graceful status).

The socket's directory belongs to the service user, who could put a symbolic link, or a socket of
its own, where a master's socket is expected. A client running as root must not be steered into
another instance's master (or any other socket) that way: the last component of the path is
opened without following a symbolic link out of its directory and must be a socket, and with
`expect_pid` (`--pid`) the process listening on it, as the kernel reports it (SO_PEERCRED), must
be that master.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import stat
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


def _connect_no_follow(sock: socket.socket, socket_path: str, follow_sibling_link: bool = True) -> None:
    """Connect to the socket at `socket_path`, following no symbolic link out of its directory.

    The path is opened with O_PATH|O_NOFOLLOW and the connection made through /proc/self/fd, so
    what was checked is what is connected to, even if the name is swapped in between. One link
    whose target is a bare name in the same directory is followed (the promoted master's link at
    the configured control_socket path is one); any other link is refused.
    """
    flags = getattr(os, "O_PATH", 0) | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(socket_path, flags)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISLNK(mode):
            target = os.readlink(socket_path)
            if not follow_sibling_link or "/" in target or target in ("", ".", ".."):
                raise ControlError(
                    f"{socket_path} is a symbolic link to {target!r}, not to a socket beside it; not following it"
                )
            _connect_no_follow(sock, os.path.join(os.path.dirname(socket_path), target), follow_sibling_link=False)
            return
        if not stat.S_ISSOCK(mode):
            raise ControlError(f"{socket_path} is not a socket")
        sock.connect(f"/proc/self/fd/{fd}" if hasattr(os, "O_PATH") else socket_path)
    finally:
        os.close(fd)


def peer_pid(sock: socket.socket) -> int:
    """The PID of the process that listens on the connected unix socket, from the kernel."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[0]


def request(
    socket_path: str,
    command: str,
    timeout: float = 10.0,
    connect_retry: float = 3.0,
    expect_pid: int | None = None,
) -> dict:
    """Send one command, return the reply's data; raise ControlError on an error reply.

    A starting master opens its socket only after some of its setup (gunicorn 27: once its first
    workers are spawned), so a refused or missing socket is retried for `connect_retry` seconds.
    With `expect_pid`, a socket served by any other process is refused before anything is sent.
    """
    deadline = time.monotonic() + connect_retry
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            _connect_no_follow(sock, socket_path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)
        except BaseException:
            sock.close()
            raise
    with sock:
        if expect_pid is not None:
            served_by = peer_pid(sock)
            if served_by != expect_pid:
                raise ControlError(f"{socket_path} is served by PID {served_by}, not by the master {expect_pid}")
        payload = json.dumps({"id": 1, "command": command}).encode()
        # A master that refuses the connection has written its reason first: read it even then.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(struct.pack(">I", len(payload)) + payload)
        (length,) = struct.unpack(">I", _recv_exactly(sock, 4))
        if length > MAX_MESSAGE:
            raise ControlError(f"reply too large: {length} bytes")
        reply = json.loads(_recv_exactly(sock, length))
    if reply.get("status") != "ok":
        raise ControlError(reply.get("error", "unknown error"))
    return reply.get("data", {})


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    expect_pid = None
    if argv[:1] == ["--pid"]:
        if len(argv) < 2 or not argv[1].isdecimal():
            print("error: --pid takes the master's PID, a decimal number", file=sys.stderr)
            return 2
        expect_pid, argv = int(argv[1]), argv[2:]
    if not argv:
        print("usage: python -m graceful_arbiter.client [--pid PID] SOCKET [COMMAND...]", file=sys.stderr)
        return 2
    command = " ".join(argv[1:]) or "graceful status"
    try:
        data = request(argv[0], command, expect_pid=expect_pid)
    except (OSError, ControlError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(data, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
