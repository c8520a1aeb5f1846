"""Which listeners a bind change keeps, and where a re-executed master finds inherited sockets."""

import socket
import subprocess
import sys

import pytest
from gunicorn.workers import gthread

from graceful_arbiter import listeners, readiness


class Listener:
    """A bound socket with the configured address gunicorn keeps as `cfg_addr`."""

    def __init__(self, cfg_addr, family=socket.AF_INET, bind_to=None):
        self.cfg_addr = cfg_addr
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(bind_to if bind_to is not None else cfg_addr)

    def getsockname(self):
        return self.sock.getsockname()

    def close(self):
        self.sock.close()


@pytest.fixture
def made():
    made = []
    yield made
    for listener in made:
        listener.close()


def test_kept_added_and_removed(made, tmp_path):
    tcp = Listener(("127.0.0.1", 0))
    unix = Listener(str(tmp_path / "a.sock"), socket.AF_UNIX)
    gone = Listener(("127.0.0.1", 0))
    made += [tcp, unix, gone]
    port = tcp.getsockname()[1]
    wanted = [("127.0.0.1", port), ("127.0.0.1", 0), str(tmp_path / "a.sock"), "/run/other.sock"]
    # ("127.0.0.1", port) names `tcp` by the address it is bound to; ("127.0.0.1", 0) names
    # `gone` and `tcp` literally, and takes the one left.
    plan, removed = listeners.plan(wanted, [tcp, unix, gone])
    assert [lnr for _address, lnr in plan] == [tcp, gone, unix, None]
    assert removed == []
    plan, removed = listeners.plan([str(tmp_path / "a.sock")], [tcp, unix, gone])
    assert plan == [(str(tmp_path / "a.sock"), unix)] and removed == [tcp, gone]


def test_inherited_listener_matches_by_bound_address(made):
    # A master re-executed by USR2 knows an inherited socket by its bound address only.
    inherited = Listener(None, bind_to=("127.0.0.1", 0))
    made.append(inherited)
    port = inherited.getsockname()[1]
    assert listeners.plan([("localhost", port)], [inherited]) == ([(("localhost", port), inherited)], [])
    assert listeners.plan([("127.0.0.2", port)], [inherited]) == ([(("127.0.0.2", port), None)], [inherited])


def test_ipv6_forms_match():
    keys = listeners.address_keys(("::0", 8000))
    assert ("tcp", "::", 8000) in keys
    assert listeners.describe(("::1", 80)) == "[::1]:80"
    assert listeners.describe("/run/a.sock") == "unix:/run/a.sock"


PLACE = """
import os, socket, sys
from graceful_arbiter import listeners
a, b = socket.socket(), socket.socket()
a.bind(("127.0.0.1", 0)); b.bind(("127.0.0.1", 0))
# Numbers that collide with the target range: b must not overwrite a before a is placed.
os.dup2(b.fileno(), 3); os.dup2(a.fileno(), 4)
names = [a.getsockname(), b.getsockname()]
listeners.place_listen_fds([4, 3])
for index, name in enumerate(names):
    placed = socket.socket(fileno=os.dup(3 + index))
    assert placed.getsockname() == name, (index, placed.getsockname(), name)
    assert os.get_inheritable(3 + index)
print("ok")
"""


def test_place_listen_fds_handles_overlapping_numbers():
    out = subprocess.run([sys.executable, "-c", PLACE], capture_output=True, text=True, timeout=30, check=False)
    assert out.stdout.strip() == "ok", out.stderr


def test_gthread_workers_get_the_keepalive_drain():
    worker_class = readiness.with_readiness(gthread.ThreadWorker)
    assert issubclass(worker_class, readiness.GthreadDrainMixin)
    if hasattr(gthread, "STOP_KEEPALIVE_LINGER"):  # gunicorn 27: the linger this drain sets
        return
    # gunicorn 25.1 to 26.x: the drain keeps announced keep-alive connections through these.
    for name in ("finish_request", "wait_for_and_dispatch_events"):
        assert callable(getattr(gthread.ThreadWorker, name, None)), f"gthread.ThreadWorker has no {name}"
