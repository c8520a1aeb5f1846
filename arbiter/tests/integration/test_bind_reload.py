"""A `bind` change at HUP (no socket activation): kept addresses stay open, added ones serve before
removed ones close."""

import http.client
import os
import signal
import socket
import time

import pytest

from .harness import Load, free_port, wait_for

pytestmark = pytest.mark.slow


def hup_and_wait(master) -> dict:
    before = master.last_refresh_id()
    master.signal(signal.SIGHUP)
    return master.wait_refresh_done(before)


def get_unix(path) -> int:
    conn = http.client.HTTPConnection("localhost", timeout=10)
    conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.sock.settimeout(10)
    conn.sock.connect(str(path))
    try:
        conn.request("GET", "/health")
        return conn.getresponse().status
    finally:
        conn.close()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


def listening_inode(port: int) -> str:
    """The inode of the socket listening on 127.0.0.1:`port`, from /proc/net/tcp."""
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":
                return fields[9]
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def holds(pid: int, inode: str) -> bool:
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                return True
        except OSError:
            continue
    return False


def test_bind_change_keeps_added_and_removed_addresses_apart(master_factory, tmp_path):
    master = master_factory("gthread", workers=2)
    first = f"127.0.0.1:{master.port}"
    second_port = free_port()
    unix_path = tmp_path / "app.sock"
    master.start()
    first_inode = listening_inode(master.port)
    assert holds(master.pid, first_inode)

    # Add a TCP and a unix address while the first keeps serving under keep-alive load.
    master.write_config(bind=[first, f"127.0.0.1:{second_port}", f"unix:{unix_path}"])
    with Load(master.port, threads=4, seconds=60, mode="keepalive") as load:
        time.sleep(0.3)
        assert hup_and_wait(master)["outcome"] == "succeeded"
        time.sleep(0.3)
        load.stop()
    print(f"\nHUP adding two binds: requests={load.total} failed={len(load.failures)}")
    assert load.ok > 50 and load.failures == [], load.failures[:5]
    assert get_unix(unix_path) == 200
    log = master.log()
    assert "(added 2, closed 0)" in log
    assert "Reload failed" not in log and "Connection in use" not in log
    # The first address is still the socket the master opened at start (never closed and re-bound).
    assert listening_inode(master.port) == first_inode and holds(master.pid, first_inode)

    # Remove the first address and the unix socket: the second serves throughout.
    master.write_config(bind=[f"127.0.0.1:{second_port}"])
    with Load(second_port, threads=4, seconds=60, mode="keepalive") as load:
        time.sleep(0.3)
        assert hup_and_wait(master)["outcome"] == "succeeded"
        time.sleep(0.3)
        load.stop()
    print(f"HUP removing two binds: requests={load.total} failed={len(load.failures)}")
    assert load.ok > 50 and load.failures == [], load.failures[:5]
    assert "(added 0, closed 2)" in master.log()
    # Once the old workers are gone, nothing holds the removed addresses.
    wait_for(lambda: refused(master.port), 20, what=f"{first} to close")
    assert not unix_path.exists()


def test_an_address_that_cannot_be_bound_closes_nothing(master_factory):
    master = master_factory("sync", workers=1)
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        master.start()
        master.write_config(bind=[f"127.0.0.1:{busy.getsockname()[1]}"])
        hup_and_wait(master)
        log = master.log()
        assert "Could not listen at 127.0.0.1:" in log and "no listener closed" in log
        with Load(master.port, threads=1, max_requests=20, seconds=20) as load:
            wait_for(lambda: load.total >= 20, 20, what="20 requests")
        assert load.failures == [], load.failures[:5]
    finally:
        busy.close()
