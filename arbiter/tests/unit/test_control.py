"""The control socket server: gunicorn's framing, the graceful commands, and forks that stop nothing.

A real server thread on a unix socket in tmp_path; the arbiter is a stand-in object with the two
attributes the server reads (`log`, `control_command`), since a real master is what the
integration tests run.
"""

import json
import logging
import os
import socket
import stat
import struct

import pytest

from graceful_arbiter import client
from graceful_arbiter.control import GracefulControlServer, dispatch


class StandInArbiter:
    def __init__(self):
        self.log = logging.getLogger("test-control")
        self.calls = []

    def control_command(self, args):
        self.calls.append(list(args))
        if args and args[0] == "boom":
            raise RuntimeError("it broke")
        return {"args": list(args), "pid": os.getpid()}


@pytest.fixture
def server(tmp_path):
    arbiter = StandInArbiter()
    path = str(tmp_path / "ctl.sock")
    srv = GracefulControlServer(arbiter, path, 0o600)
    srv.start()
    yield srv
    srv.stop()


def send(sock: socket.socket, command: str) -> dict:
    payload = json.dumps({"id": 7, "command": command}).encode()
    sock.sendall(struct.pack(">I", len(payload)) + payload)
    (length,) = struct.unpack(">I", client._recv_exactly(sock, 4))
    return json.loads(client._recv_exactly(sock, length))


def test_graceful_commands_reach_the_arbiter_and_gunicorns_reach_its_handlers(server):
    assert client.request(server.socket_path, "graceful status brief") == {
        "args": ["status", "brief"],
        "pid": os.getpid(),
    }
    assert "commands" in client.request(server.socket_path, "help")  # gunicorn's own command table


def test_errors_come_back_as_error_replies_and_the_server_keeps_serving(server):
    with pytest.raises(client.ControlError, match="Command failed: it broke"):
        client.request(server.socket_path, "graceful boom")
    with pytest.raises(client.ControlError, match="Unknown command"):
        client.request(server.socket_path, "no-such-command")
    assert client.request(server.socket_path, "graceful x")["args"] == ["x"]


def test_socket_has_the_configured_mode(server):
    assert stat.S_IMODE(os.stat(server.socket_path).st_mode) == 0o600


def test_one_connection_carries_several_commands(server):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(server.socket_path)
        replies = [send(sock, f"graceful n{i}") for i in range(3)]
    assert [r["data"]["args"] for r in replies] == [["n0"], ["n1"], ["n2"]]
    assert all(r["id"] == 7 and r["status"] == "ok" for r in replies)


def test_a_fork_stops_nothing_in_the_parent_and_the_child_keeps_no_socket(server):
    """gunicorn 27 stops and restarts its control thread around each fork, dropping clients."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(server.socket_path)
        assert send(sock, "graceful before")["status"] == "ok"
        listener_fd = server._listener.fileno()
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # the child reports what it holds, then leaves without teardown
            try:
                os.close(read_end)
                kept = []
                try:
                    os.fstat(listener_fd)
                    kept.append("listener fd open")
                except OSError:
                    pass
                if server._listener is not None or server._clients:
                    kept.append("socket objects")
                os.write(write_end, json.dumps(kept).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        with os.fdopen(read_end) as pipe:
            kept_in_child = json.loads(pipe.read())
        os.waitpid(child, 0)
        # The same connection, opened before the fork, is still answered.
        assert send(sock, "graceful after")["data"]["args"] == ["after"]
    assert kept_in_child == []
    assert client.request(server.socket_path, "graceful again")["args"] == ["again"]


def test_stop_removes_the_socket_and_ends_connected_clients(tmp_path):
    arbiter = StandInArbiter()
    srv = GracefulControlServer(arbiter, str(tmp_path / "ctl.sock"))
    srv.start()
    accept_thread = srv._thread
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(5)
    sock.connect(srv.socket_path)
    assert send(sock, "graceful x")["status"] == "ok"
    srv.stop()
    assert not os.path.exists(srv.socket_path)
    assert sock.recv(1) == b""  # EOF, not a wait for a timeout
    sock.close()
    assert not accept_thread.is_alive()


def test_start_replaces_a_stale_socket_file(tmp_path):
    path = tmp_path / "ctl.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    srv = GracefulControlServer(StandInArbiter(), str(path))
    srv.start()
    try:
        assert client.request(str(path), "graceful y")["args"] == ["y"]
    finally:
        srv.stop()


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"id": 1, "command": ""}, {"id": 1, "status": "error", "error": "Empty command"}),
        (
            {"id": 2, "command": "graceful 'open"},
            {"id": 2, "status": "error", "error": "Invalid argument: No closing quotation"},
        ),
        ({"id": 3, "command": "graceful", "args": ["a", 1]}, {"id": 3, "status": "ok", "data": ["graceful", "a", "1"]}),
        ("not a dict", {"id": 0, "status": "error", "error": "Empty command"}),
    ],
)
def test_dispatch(message, expected):
    assert dispatch(message, lambda parts: parts) == expected


def test_socket_is_never_wider_than_its_mode_and_leaves_nothing_beside_it(tmp_path):
    """Bound in a private directory and renamed into place, not under a process-wide umask."""
    umask = os.umask(0)  # the widest umask: a plain bind would make the socket 0777
    try:
        srv = GracefulControlServer(StandInArbiter(), str(tmp_path / "ctl.sock"), 0o660)
        srv.start()
    finally:
        os.umask(umask)
    try:
        assert stat.S_IMODE(os.stat(srv.socket_path).st_mode) == 0o660
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ctl.sock"]
    finally:
        srv.stop()


def test_a_connection_is_refused_cleanly_when_no_thread_can_be_started(server, monkeypatch):
    def no_thread(*args, **kwargs):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr("graceful_arbiter.control.threading.Thread.start", no_thread)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(server.socket_path)
        assert sock.recv(1) == b""  # closed at once, not left hanging
    monkeypatch.undo()
    assert client.request(server.socket_path, "graceful z")["args"] == ["z"]
    assert server._thread.is_alive()


def test_a_readiness_report_wakes_the_master_loop_and_an_undrained_pipe_does_not_spin():
    """GracefulArbiter._wake_on_ready_reports on a stand-in master: a real pipe and a real thread."""
    import threading
    import time
    import types

    from graceful_arbiter.arbiter import POLL_INTERVAL, GracefulArbiter

    read_end, write_end = os.pipe()
    wakeups = []
    master = types.SimpleNamespace(
        _ready_r=read_end, _ready_drained=threading.Event(), wakeup=lambda: wakeups.append(time.monotonic())
    )
    watcher = threading.Thread(target=GracefulArbiter._wake_on_ready_reports, args=(master,), daemon=True)
    watcher.start()
    time.sleep(0.2)
    assert wakeups == []  # nothing reported, nothing woken
    os.write(write_end, b"123 ok\n")
    deadline = time.monotonic() + 5
    while not wakeups and time.monotonic() < deadline:
        time.sleep(0.01)
    assert wakeups, "the report did not wake the loop"
    # The loop has not read the pipe: the watcher looks again only every POLL_INTERVAL, not in a spin.
    time.sleep(POLL_INTERVAL * 5)
    assert len(wakeups) <= 7
    # The loop reads the pipe and says so: no more wake-ups.
    os.read(read_end, 100)
    master._ready_drained.set()
    time.sleep(POLL_INTERVAL * 2)
    settled = len(wakeups)
    time.sleep(POLL_INTERVAL * 3)
    assert len(wakeups) == settled
    os.close(write_end)  # EOF makes the pipe readable; closing the read end ends the watcher
    os.close(read_end)
    watcher.join(5)
    assert not watcher.is_alive()
