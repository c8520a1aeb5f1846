"""GRACEFUL_GUNICORN_ENV_FILE: a HUP's new workers and a USR2's new master see the file as it is now.

The demo app shows DEMO_GREETING and a digest of DEMO_SECRET, read at each request.
"""

import hashlib
import http.client
import json
import os
import signal
import time

import pytest

from .harness import Load, wait_for

pytestmark = pytest.mark.slow

HEADER = "#\n# Ansible managed\n#\n# Environment of gunicorn-demo.service.\n"


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


def get_root(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def served_by_all(port: int, predicate, timeout: float = 30):
    """Wait until 20 answers in a row satisfy `predicate` (every worker has turned over)."""

    def check():
        return all(predicate(get_root(port)) for _attempt in range(20))

    wait_for(check, timeout, what="every worker to serve the new environment")


def hup_and_wait(master) -> dict:
    before = master.last_refresh_id()
    master.signal(signal.SIGHUP)
    return master.wait_refresh_done(before)


def test_hup_and_usr2_apply_the_environment_file(master_factory, tmp_path):
    env_file = tmp_path / "environment"
    env_file.write_text(HEADER + 'DEMO_GREETING="hello \\"world\\" \\$HOME \\`x\\` \\\\"\nDEMO_SECRET="first-7f3a"\n')
    master = master_factory("gthread", workers=2)
    master.start(GRACEFUL_GUNICORN_ENV_FILE=str(env_file))
    body = get_root(master.port)
    assert body["greeting"] == 'hello "world" $HOME `x` \\'
    assert body["secret_sha256"] == digest("first-7f3a")

    # A rotated secret and a dropped name reach the next generation of workers at HUP, under load.
    env_file.write_text(HEADER + 'DEMO_SECRET="second-9c1e"\n')
    with Load(master.port, threads=4, seconds=60, mode="keepalive") as load:
        time.sleep(0.3)
        assert hup_and_wait(master)["outcome"] == "succeeded"
        served_by_all(master.port, lambda b: b["secret_sha256"] == digest("second-9c1e") and b["greeting"] is None)
        load.stop()
    print(f"\nHUP with a rotated secret: requests={load.total} failed={len(load.failures)}")
    assert load.ok > 50 and load.failures == [], load.failures[:5]
    assert master.status()["environment_file"]["outcome"] == "applied"

    # A file that does not parse: the error names the line, the environment stays, the reload goes on.
    env_file.write_text(HEADER + 'DEMO_SECRET="third-55aa\n')
    assert hup_and_wait(master)["outcome"] == "succeeded"
    assert master.status()["environment_file"]["outcome"] == "failed"
    assert "line 5" in master.status()["environment_file"]["error"]
    served_by_all(master.port, lambda b: b["secret_sha256"] == digest("second-9c1e"))

    env_file.write_text(HEADER + 'DEMO_SECRET="fourth-0b0b"\nDEMO_GREETING=back\n')
    hup_and_wait(master)
    served_by_all(master.port, lambda b: b["secret_sha256"] == digest("fourth-0b0b") and b["greeting"] == "back")

    # USR2: the new master reads the file afresh, and a name dropped since the last HUP goes.
    env_file.write_text(HEADER + 'DEMO_SECRET="fifth-d00d"\n')
    master.signal(signal.SIGUSR2)
    new_pid = wait_for(lambda: int((master.dir / "master.pid.2").read_text()), 20, what="new master")
    master.wait_ready(pid=new_pid)
    master.signal(signal.SIGWINCH)
    wait_for(lambda: not master.status()["workers"], 30, what="old master drained")
    served_by_all(master.port, lambda b: b["secret_sha256"] == digest("fifth-d00d") and b["greeting"] is None)
    with open(f"/proc/{new_pid}/environ", "rb") as f:
        assert b"DEMO_GREETING" in f.read()  # what the exec passed: the launcher dropped it from there
    master.signal(signal.SIGTERM)
    master.proc.wait(timeout=30)

    log = master.log()
    for value in ("first-7f3a", "second-9c1e", "third-55aa", "fourth-0b0b", "fifth-d00d", "hello"):
        assert value not in log
    assert "Environment file not applied" in log and "line 5" in log
    os.kill(new_pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists(f"/proc/{new_pid}"), 30, what="new master exit")


def test_a_bad_environment_file_stops_a_new_master_before_it_serves(master_factory, tmp_path):
    env_file = tmp_path / "environment"
    env_file.write_text("DEMO_SECRET=two words\n")
    master = master_factory("sync", workers=1)
    master.start(wait=False, GRACEFUL_GUNICORN_ENV_FILE=str(env_file))
    assert master.proc.wait(timeout=30) == 1
    log = master.log()
    assert "GRACEFUL_GUNICORN_ENV_FILE" in log and "line 1" in log and "DEMO_SECRET" in log
    assert "two words" not in log
