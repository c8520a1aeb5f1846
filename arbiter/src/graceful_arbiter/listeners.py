"""The master's listening sockets: which to keep when `bind` changes, and where a new master finds them."""

from __future__ import annotations

import fcntl
import ipaddress
import os
import socket

from gunicorn import sock as _sock

SD_LISTEN_FDS_START = 3


def describe(address) -> str:
    if isinstance(address, int):
        return f"fd://{address}"
    if isinstance(address, str):
        return f"unix:{address}"
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def _ip(host: str) -> str | None:
    try:
        return ipaddress.ip_address(str(host).split("%", 1)[0]).compressed
    except ValueError:
        return None


def _sockname_key(name) -> tuple | None:
    if isinstance(name, (str, bytes)):
        name = os.fsdecode(name)
        return ("unix", os.path.abspath(name)) if name else None
    if isinstance(name, tuple) and len(name) >= 2:
        ip = _ip(name[0])
        return None if ip is None else ("tcp", ip, int(name[1]))
    return None


def address_keys(address, resolve: bool = True) -> set:
    """What a configured address can match: its literal form and, for a host name, its addresses."""
    if isinstance(address, int):
        return {("fd", address)}
    if isinstance(address, str):
        return {("unix", os.path.abspath(address))}
    host, port = str(address[0]), int(address[1])
    keys = {("literal", host, port)}
    ip = _ip(host)
    if ip is not None:
        keys.add(("tcp", ip, port))
    elif resolve and port:
        try:
            for *_rest, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
                key = _sockname_key(sockaddr)
                if key:
                    keys.add(key)
        except (OSError, UnicodeError):
            pass
    return keys


def listener_keys(listener) -> set:
    """What a listener answers to: the address it was configured with and the one it is bound to."""
    keys = set()
    cfg_addr = getattr(listener, "cfg_addr", None)
    if cfg_addr is not None:
        keys |= address_keys(cfg_addr, resolve=False)
    try:
        key = _sockname_key(listener.getsockname())
    except (OSError, AttributeError):
        key = None
    if key:
        keys.add(key)
    return keys


def plan(addresses, current) -> tuple[list, list]:
    """([(address, listener to keep or None to bind)] in configured order, [listeners to close]).

    A listener is kept for a configured address that names it literally (port 0 included) or
    resolves to the address it is bound to; each listener serves one configured address at most.
    """
    left = list(current)
    wanted = []
    for address in addresses:
        keys = address_keys(address, resolve=False)
        match = next((lnr for lnr in left if keys & listener_keys(lnr)), None)
        if match is None and not isinstance(address, (int, str)):
            keys = address_keys(address)
            match = next((lnr for lnr in left if keys & listener_keys(lnr)), None)
        if match is not None:
            left.remove(match)
        wanted.append((address, match))
    return wanted, left


def bind(address, conf, log):
    """One new gunicorn listener for `address` (one attempt: the master is serving meanwhile)."""
    if isinstance(address, int):
        raise ValueError("fd:// binds are taken when the master starts, not at a reload")
    sock_type = getattr(_sock, "_sock_type", None)
    if sock_type is None:  # a gunicorn without it: its create_sockets, for this address only
        return _sock.create_sockets(_OneAddress(conf, address), log)[0]
    return sock_type(address)(address, conf, log)


class _OneAddress:
    def __init__(self, conf, address):
        self._conf = conf
        self.address = [address]

    def __getattr__(self, name):
        return getattr(self._conf, name)


def place_listen_fds(fds: list[int], start: int = SD_LISTEN_FDS_START) -> None:
    """Put the sockets `fds` at start, start+1, ... (inheritable), as LISTEN_FDS promises.

    Runs in the forked child right before it executes the new master. Every fd is first
    duplicated above the target range, so that placing one cannot overwrite another not yet
    placed; the original numbers are then closed, so the new master holds each socket once.
    """
    count = len(fds)
    above = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, start + count) for fd in fds]
    for fd in fds:
        if not start <= fd < start + count:
            os.close(fd)
    for index, fd in enumerate(above):
        os.dup2(fd, start + index, inheritable=True)
        os.close(fd)
