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
import threading

import pytest

from graceful_arbiter import client
from graceful_arbiter.control import MAX_CLIENTS, MAX_WORKERS, GracefulControlServer, dispatch


class StandInArbiter:
    def __init__(self):
        self.log = logging.getLogger("test-control")
        self.calls = []
        self.num_workers = 2  # read and changed by gunicorn's `worker add/remove` handlers
        self.wakeups = 0

    def wakeup(self):
        self.wakeups += 1

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
    with pytest.raises(client.ControlError, match="no thread to serve this connection"):
        client.request(server.socket_path, "graceful y")  # an error reply at once, not a wait for a timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(server.socket_path)
        (length,) = struct.unpack(">I", client._recv_exactly(sock, 4))
        client._recv_exactly(sock, length)
        assert sock.recv(1) == b""  # then closed
    monkeypatch.undo()
    assert server._clients == set()
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


def test_connections_past_the_cap_are_refused_with_an_error_and_served_again_once_one_ends(server):
    held = []
    try:
        for i in range(MAX_CLIENTS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            held.append(sock)
            sock.settimeout(5)
            sock.connect(server.socket_path)
            assert send(sock, f"graceful held{i}")["status"] == "ok"  # each one served by its own thread
        with pytest.raises(client.ControlError, match=f"too many control connections \\(at most {MAX_CLIENTS}\\)"):
            client.request(server.socket_path, "graceful extra")
        assert ["extra"] not in server.arbiter.calls
        assert len(server._clients) == MAX_CLIENTS
        assert send(held[0], "graceful still")["data"]["args"] == ["still"]  # the held ones keep working
        held.pop().close()
        # The freed slot is taken back once that client's thread has seen the end of its connection.
        for _attempt in range(100):
            try:
                assert client.request(server.socket_path, "graceful after")["args"] == ["after"]
                break
            except client.ControlError:
                threading.Event().wait(0.02)
        else:
            pytest.fail("a slot freed by a closed connection was never reused")
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize(
    ("command", "args", "error"),
    [
        ("worker add 65", [], "worker add takes one count from 1 to 64, got '65'"),
        ("worker add 0", [], "worker add takes one count from 1 to 64, got '0'"),
        ("worker add -5", [], "worker add takes one count from 1 to 64, got '-5'"),
        ("worker add", ["1\n"], "worker add takes one count from 1 to 64, got '1\\n'"),
        ("worker add 1 2", [], "worker add takes one count from 1 to 64, got '1 2'"),
        ("worker add " + "9" * 5000, [], "worker add takes one count from 1 to 64, got '" + "9" * 40 + "'"),
        ("worker remove 1000", [], "worker remove takes one count from 1 to 64"),
        ("worker kill abc", [], "worker kill takes one worker PID from 1 to 4194304, got 'abc'"),
        ("worker kill", [], "worker kill takes one worker PID from 1 to 4194304, got 'nothing'"),
        ("dirty add 100", [], "dirty add takes one count from 1 to 64, got '100'"),
    ],
)
def test_counts_and_pids_out_of_bounds_are_refused_and_change_nothing(server, command, args, error):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(server.socket_path)
        payload = json.dumps({"id": 3, "command": command, "args": args}).encode()
        sock.sendall(struct.pack(">I", len(payload)) + payload)
        (length,) = struct.unpack(">I", client._recv_exactly(sock, 4))
        reply = json.loads(client._recv_exactly(sock, length))
    assert (reply["id"], reply["status"]) == (3, "error")
    assert reply["error"].startswith("Invalid argument: " + error)
    assert server.arbiter.num_workers == 2
    assert server.arbiter.wakeups == 0


def test_worker_add_within_bounds_runs_and_never_passes_the_total_cap(server):
    reply = client.request(server.socket_path, "worker add 3")
    assert reply == {"added": 3, "previous": 2, "total": 5}
    assert server.arbiter.wakeups == 1
    server.arbiter.num_workers = MAX_WORKERS - 1
    with pytest.raises(client.ControlError, match=f"would make {MAX_WORKERS + 1} workers; .* at most {MAX_WORKERS}"):
        client.request(server.socket_path, "worker add 2")
    assert server.arbiter.num_workers == MAX_WORKERS - 1
    assert client.request(server.socket_path, "worker add")["total"] == MAX_WORKERS  # the default count is 1


def test_client_follows_no_symlink_out_of_the_socket_directory(server, tmp_path):
    """A service user could plant these in its runtime directory to steer a root client elsewhere."""
    elsewhere = tmp_path / "other-instance"
    elsewhere.mkdir()
    instance = tmp_path / "instance"
    instance.mkdir()
    os.replace(server.socket_path, elsewhere / "control.1.sock")  # the master now listens "elsewhere"
    planted = instance / "control.4242.sock"
    planted.symlink_to(elsewhere / "control.1.sock")  # an absolute link out of the directory
    with pytest.raises(client.ControlError, match=r"is a symbolic link to .*not following it"):
        client.request(str(planted), "graceful x")
    relative = instance / "control.4343.sock"
    relative.symlink_to("../other-instance/control.1.sock")
    with pytest.raises(client.ControlError, match="not following it"):
        client.request(str(relative), "graceful x")
    (instance / "control.1.sock").symlink_to(elsewhere / "control.1.sock")
    chained = instance / "control.sock"
    chained.symlink_to("control.1.sock")  # a sibling name, but that one links out again
    with pytest.raises(client.ControlError, match="not following it"):
        client.request(str(chained), "graceful x")
    plain = instance / "plain.sock"
    plain.write_text("")
    with pytest.raises(client.ControlError, match="is not a socket"):
        client.request(str(plain), "graceful x")
    assert server.arbiter.calls == []  # nothing reached the master through any of them


def test_client_follows_the_promoted_masters_link_beside_its_socket(server, tmp_path):
    link = tmp_path / "control.sock"
    link.symlink_to(os.path.basename(server.socket_path))  # as the promoted master makes it
    assert client.request(str(link), "graceful via-link")["args"] == ["via-link"]


def test_client_checks_the_listening_pid_when_given(server):
    assert client.request(server.socket_path, "graceful me", expect_pid=os.getpid())["args"] == ["me"]
    with pytest.raises(client.ControlError, match=f"served by PID {os.getpid()}, not by the master 1"):
        client.request(server.socket_path, "graceful other", expect_pid=1)
    assert ["other"] not in server.arbiter.calls


def test_client_command_line_takes_the_master_pid(server, capsys):
    assert client.main(["--pid", str(os.getpid()), server.socket_path, "graceful", "cli"]) == 0
    assert json.loads(capsys.readouterr().out)["args"] == ["cli"]
    assert client.main(["--pid", "1", server.socket_path]) == 1
    assert "not by the master 1" in capsys.readouterr().err
    assert client.main(["--pid", "x1", server.socket_path]) == 2
