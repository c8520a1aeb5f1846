"""USR2 upgrades: WINCH drains the old master, the pidfile follows the new one, failures stay local."""

import os
import shutil
import signal
import time

import pytest

from .harness import Load, wait_for

pytestmark = pytest.mark.slow


def read_pid(path) -> int:
    return int(path.read_text().strip())


@pytest.mark.parametrize("kind", ["gthread", "asgi"])
def test_usr2_winch_term_hands_over_without_failures(master_factory, kind):
    master = master_factory(kind, workers=2)
    master.start()
    old_pid = master.pid
    pidfile = master.dir / "master.pid"
    with Load(master.port, threads=4, seconds=60) as load:
        master.signal(signal.SIGUSR2)
        new_pid = wait_for(lambda: read_pid(master.dir / "master.pid.2"), 20, what="new master pidfile")
        master.wait_ready(pid=new_pid)
        assert master.status(new_pid)["master"]["generation"] == 2
        master.signal(signal.SIGWINCH)
        wait_for(lambda: not master.status()["workers"], 20, what="old master drained")
        assert master.status()["master"]["winched"]
        master.signal(signal.SIGTERM)
        assert master.proc.wait(timeout=30) == 0
        promoted = wait_for(lambda: (s := master.status(new_pid))["master"]["name"] == "Master" and s, 10)
        time.sleep(0.5)
        load.stop()
    assert read_pid(pidfile) == new_pid != old_pid
    assert not (master.dir / "master.pid.2").exists()
    assert promoted["master"]["parent_pid"] == 0
    assert os.readlink(master.dir / "control.sock") == os.path.basename(master.socket_of(new_pid))
    assert load.ok > 50
    assert len(load.failures) == load.keepalive_failures, load.failures[:5]
    if kind == "gthread":
        assert load.failures == []
    # The promoted master still refreshes and stops cleanly.
    master.refresh(new_pid)
    assert master.wait_refresh_done(0, pid=new_pid)["outcome"] == "succeeded"
    os.kill(new_pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists(f"/proc/{new_pid}"), 30, what="new master exit")


def test_term_of_old_master_hands_pidfile_to_new_master(master_factory):
    master = master_factory("sync", workers=1)
    master.start()
    master.signal(signal.SIGUSR2)
    new_pid = wait_for(lambda: read_pid(master.dir / "master.pid.2"), 20, what="new master pidfile")
    master.wait_ready(pid=new_pid)
    master.signal(signal.SIGTERM)
    master.proc.wait(timeout=30)
    # Written by the old master on its way out, before the new one noticed.
    assert read_pid(master.dir / "master.pid") == new_pid
    assert "Handed the pidfile" in master.log()
    os.kill(new_pid, signal.SIGTERM)
    wait_for(lambda: not os.path.exists(f"/proc/{new_pid}"), 30, what="new master exit")


@pytest.mark.parametrize("failure", ["pre_exec", "cwd"])
def test_failure_between_fork_and_exec_leaves_old_master_serving(master_factory, tmp_path, failure):
    master = master_factory("gthread", workers=2)
    workdir = tmp_path / "release"
    workdir.mkdir()
    if failure == "pre_exec":
        config = master.dir / "gunicorn.conf.py"
        config.write_text(config.read_text() + "\n\ndef pre_exec(server):\n    raise RuntimeError('drill')\n")
    master.start(cwd=workdir)
    workers = master.ready_pids()
    if failure == "cwd":
        shutil.rmtree(workdir)  # gunicorn re-executes in the directory it started in
    with Load(master.port, threads=2, seconds=30) as load:
        master.signal(signal.SIGUSR2)
        status = wait_for(lambda: (s := master.status())["master"]["last_upgrade"] and s, 20, what="failed upgrade")
        time.sleep(1)
        assert master.ready_pids() == workers
        load.stop()
    assert status["master"]["last_upgrade"]["outcome"] == "failed"
    assert master.proc.poll() is None
    assert load.failures == []
    assert "failed before exec" in master.log()
