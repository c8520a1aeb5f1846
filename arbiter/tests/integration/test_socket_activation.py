"""Socket activation (LISTEN_FDS) and the drained stop, on loopback.

systemd cannot run here; the test process stands in for it, in the part that matters: it binds the
listening socket, keeps its own copy for the whole test (as a .socket unit does across restarts of
its service), and starts each master through a small exec wrapper that puts the socket at fd 3 and
sets LISTEN_FDS=1 and LISTEN_PID to the wrapper's own PID, which the exec keeps (harness.py).
"""

import http.client
import os
import signal
import socket
import time

import pytest

from .harness import Load, free_port, wait_for

pytestmark = pytest.mark.slow


def read_pid(path) -> int:
    return int(path.read_text().strip())


def holds_socket(pid: int, sock: socket.socket) -> bool:
    """Whether process `pid` has the very socket `sock` open (same inode), not another one."""
    inode = os.fstat(sock.fileno()).st_ino
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.stat(f"/proc/{pid}/fd/{fd}").st_ino == inode:
                return True
        except OSError:
            continue
    return False


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def test_usr2_hands_the_inherited_socket_to_the_new_master(master_factory):
    master = master_factory("gthread", workers=2, socket_activation=True)
    # `bind` names another port: under socket activation the master serves the inherited fd only.
    unused = free_port()
    master.write_config(bind=f"127.0.0.1:{unused}")
    master.start()
    old_pid = master.pid
    assert holds_socket(old_pid, master.activation_socket)
    assert refused(unused)
    with Load(master.port, threads=6, seconds=60, mode="keepalive") as load:
        time.sleep(0.5)
        master.signal(signal.SIGUSR2)
        new_pid = wait_for(lambda: read_pid(master.dir / "master.pid.2"), 20, what="new master pidfile")
        master.wait_ready(pid=new_pid)
        # The new master got the same listening socket (at fd 3, or it could not have started:
        # gunicorn wraps fds 3..LISTEN_FDS+2), announced for itself.
        assert holds_socket(new_pid, master.activation_socket)
        with open(f"/proc/{new_pid}/environ", "rb") as f:
            environ = dict(item.split(b"=", 1) for item in f.read().split(b"\0") if b"=" in item)
        assert b"GUNICORN_FD" not in environ
        # gunicorn reads and then drops LISTEN_FDS/LISTEN_PID; /proc keeps what the exec passed.
        assert environ.get(b"LISTEN_FDS") == b"1" and environ.get(b"LISTEN_PID") == str(new_pid).encode()
        # Retire the old master the way the collection's modules do: WINCH, then TERM.
        master.signal(signal.SIGWINCH)
        wait_for(lambda: not master.status()["workers"], 30, what="old master drained")
        master.signal(signal.SIGTERM)
        assert master.proc.wait(timeout=30) == 0
        wait_for(lambda: master.status(new_pid)["master"]["name"] == "Master", 10, what="promotion")
        time.sleep(0.5)
        load.stop()
    print(f"\nusr2 under socket activation: requests={load.total} failed={len(load.failures)}")
    assert load.ok > 200
    assert load.failures == [], load.failures[:5]
    assert read_pid(master.dir / "master.pid") == new_pid
    assert not (master.dir / "master.pid.2").exists()
    assert os.readlink(master.dir / "control.sock") == os.path.basename(master.socket_of(new_pid))
    assert refused(unused)

    # HUP with yet another bind: nothing is bound or closed, the inherited socket keeps serving.
    other = free_port()
    master.write_config(bind=f"127.0.0.1:{other}")
    before = master.status(new_pid)["refresh"]["last"]
    os.kill(new_pid, signal.SIGHUP)
    done = master.wait_refresh_done(before["id"] if before else 0, pid=new_pid)
    assert done["trigger"] == "hup" and done["outcome"] == "succeeded"
    assert refused(other)
    assert holds_socket(new_pid, master.activation_socket)
    with Load(master.port, threads=2, max_requests=50, seconds=20) as load:
        wait_for(lambda: load.total >= 50, 20, what="50 requests")
    assert load.ok >= 50 and not load.failures
    assert "binds come from the socket units" in master.log()
    os.kill(new_pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists(f"/proc/{new_pid}"), 30, what="new master exit")


@pytest.mark.parametrize("kind", ["gthread", "sync", "asgi", "uvicorn"])
def test_term_drains_and_a_restart_refuses_nothing(master_factory, kind):
    """TERM (systemctl stop/restart) under keep-alive load; the socket outlives the master."""
    master = master_factory(kind, workers=2, socket_activation=True, graceful_timeout=10)
    master.start()
    with Load(master.port, threads=8, seconds=60, mode="keepalive") as load:
        time.sleep(1.0)
        before_stop = load.total
        master.signal(signal.SIGTERM)
        assert master.proc.wait(timeout=30) == 0
        stopped_at = load.total
        master.start()  # what systemd does next on a restart, with the socket it kept
        time.sleep(1.0)
        load.stop()
    print(
        f"\nTERM + start, {kind}: requests={load.total} failed={len(load.failures)} "
        f"(before TERM {before_stop}, by exit {stopped_at})"
    )
    assert load.ok > before_stop
    assert load.failures == [], load.failures[:5]
    log = master.log()
    assert "Stopping: not accepting any more" in log


@pytest.mark.parametrize("kind", ["asgi", "uvicorn", "gthread"])
def test_term_after_winch_leaves_the_drain_alone(master_factory, kind):
    """TERM while WINCH's retirement drains: the idle kept-alive client still gets an answer."""
    master = master_factory(kind, workers=1, graceful_timeout=10)
    master.start()
    conn = http.client.HTTPConnection("127.0.0.1", master.port, timeout=10)
    try:
        conn.request("GET", "/")
        first = conn.getresponse()
        first.read()
        assert first.status == 200 and not first.will_close
        master.signal(signal.SIGWINCH)
        time.sleep(0.5)
        master.signal(signal.SIGTERM)
        time.sleep(2.5)  # idle past gunicorn's own 2 s linger, within the keep-alive timeout (5 s)
        conn.request("GET", "/")
        second = conn.getresponse()
        second.read()
        assert second.status == 200
        assert second.getheader("connection", "").lower() == "close"
    finally:
        conn.close()
    assert master.proc.wait(timeout=30) == 0
