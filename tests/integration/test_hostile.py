"""The modules against an app that tries to steer root: real gunicorn masters on 127.0.0.1, no systemd.

There is no systemd on this machine, so the unit's MainPID and cgroup checks cannot run here (the lab tests run
them on real systemd hosts); what runs here is everything else: the PID a hostile <pidfile>.2 or a squatted
control socket names is never signalled, the module fails naming it, and the old master keeps serving.

The victim is a Python process the test starts that records every catchable signal it receives in a file; it is
stopped by PID in teardown.
"""

import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)

VICTIM = r"""
import signal, sys, time
log = sys.argv[1]
def note(signum, frame):
    with open(log, "a") as handle:
        handle.write("%d\n" % signum)
for name in dir(signal):
    if name.startswith("SIG") and not name.startswith("SIG_") and name not in ("SIGKILL", "SIGSTOP", "SIGCHLD"):
        try:
            signal.signal(getattr(signal, name), note)
        except (OSError, RuntimeError, ValueError):
            pass
open(log, "a").close()
time.sleep(600)
"""


class Victim:
    def __init__(self, directory):
        self.log = Path(directory) / "victim-signals.log"
        self.proc = subprocess.Popen([sys.executable, "-c", VICTIM, str(self.log)])
        deadline = time.time() + 10
        while not self.log.exists() and time.time() < deadline:
            time.sleep(0.05)
        self.pid = self.proc.pid

    def untouched(self):
        """Alive, not stopped, and no signal received."""
        state = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return self.proc.poll() is None and state not in ("T", "t") and self.log.read_text() == ""

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def victim(tmp_path):
    created = []

    def factory():
        created.append(Victim(tmp_path))
        return created[-1]

    yield factory
    for item in created:
        item.stop()


def base_args(site, **extra):
    args = {
        "pidfile": site.pidfile,
        "config": site.config,
        "control_socket": site.control_socket,
        "health_url": site.url,
        "timeout": 20,
    }
    args.update(extra)
    return args


def one_release(site):
    site.release("v1", "1.0.0")
    site.switch("v1")
    site.start()


def second_pidfile(site):
    return site.pidfile + ".2"


@pytest.mark.parametrize("arbiter", ["graceful", "stock"])
def test_victim_in_second_pidfile_is_refused_by_every_module(make_site, module, victim, arbiter):
    site = make_site(kind="wsgi", worker_class="sync", arbiter=arbiter, workers=2)
    one_release(site)
    master = site.master_pid()
    target = victim()
    Path(second_pidfile(site)).write_text(f"{target.pid}\n")
    expected = (
        f"refused PID {target.pid} named by {second_pidfile(site)} as the second master of master {master}: "
        f"it is not a child of master {master}"
    )
    try:
        results = {
            "gunicorn_upgrade": module("gunicorn_upgrade", base_args(site, bake_seconds=1)),
            "gunicorn_reload": module("gunicorn_reload", base_args(site)),
            "gunicorn_refresh": module("gunicorn_refresh", base_args(site)),
        }
        for name, result in results.items():
            assert result.get("failed") is True, (name, result)
            assert result["failed_phase"] == "preflight", (name, result["msg"])
            assert expected in result["msg"], (name, result["msg"])
            assert result["signals"] == [] if "signals" in result else True
        info = module("gunicorn_info", base_args(site))
        assert not info.get("failed") and info["upgrade_in_flight"] is False
        assert any(expected in note for note in info["notes"])
        assert target.untouched()
        assert site.master_pid() == master and site.healthy()
        # The module leaves a file naming a live process alone.
        assert Path(second_pidfile(site)).read_text().strip() == str(target.pid)
    finally:
        Path(second_pidfile(site)).unlink(missing_ok=True)


def test_second_pidfile_naming_the_old_master_is_refused(make_site, module):
    site = make_site(kind="wsgi", worker_class="sync", arbiter="graceful", workers=2)
    one_release(site)
    master = site.master_pid()
    Path(second_pidfile(site)).write_text(f"{master}\n")
    try:
        result = module("gunicorn_upgrade", base_args(site, bake_seconds=1))
        assert result.get("failed") is True
        assert f"refused PID {master} named by {second_pidfile(site)}" in result["msg"]
        assert "it is the old master itself" in result["msg"]
        assert site.master_pid() == master and site.healthy()
    finally:
        Path(second_pidfile(site)).unlink(missing_ok=True)


def test_symlinked_second_pidfile_is_refused_and_not_removed(make_site, module, tmp_path):
    site = make_site(kind="wsgi", worker_class="sync", arbiter="stock", workers=2)
    one_release(site)
    precious = tmp_path / "precious"
    precious.write_text("1\n")
    os.symlink(precious, second_pidfile(site))
    try:
        result = module("gunicorn_upgrade", base_args(site, bake_seconds=1))
        assert result.get("failed") is True
        assert f"refused {second_pidfile(site)}: pidfile {second_pidfile(site)} is a symlink" in result["msg"]
        assert precious.read_text() == "1\n" and os.path.islink(second_pidfile(site))
    finally:
        os.unlink(second_pidfile(site))


def test_victim_written_over_second_pidfile_during_the_upgrade(make_site, load, module, victim):
    """The new master's own <pidfile>.2 is replaced by a victim's PID as soon as it appears."""
    site = make_site(kind="wsgi", worker_class="sync", arbiter="graceful", workers=2)
    site.release("v1", "1.0.0")
    site.release("v2", "2.0.0")
    site.switch("v1")
    site.start()
    site.switch("v2")
    master = site.master_pid()
    target = victim()
    stop = threading.Event()
    seen = {}

    def overwrite():
        path = Path(second_pidfile(site))
        while not stop.is_set():
            try:
                text = path.read_text().strip()
            except OSError:
                time.sleep(0.005)
                continue
            if text != str(target.pid):
                seen.setdefault("new_master", int(text))
                path.write_text(f"{target.pid}\n")
            time.sleep(0.005)

    watcher = threading.Thread(target=overwrite, daemon=True)
    watcher.start()
    try:
        with load(site.url, threads=2, seconds=60, max_requests=20000) as traffic:
            result = module("gunicorn_upgrade", base_args(site, bake_seconds=1))
    finally:
        stop.set()
        watcher.join(timeout=5)
    if "new_master" in seen:
        site.pids_seen.add(seen["new_master"])
    assert result.get("failed") is True
    assert f"refused PID {target.pid} named by {second_pidfile(site)}" in result["msg"]
    assert "it is not a child of master" in result["msg"]
    assert result["rolled_back"] is True, result["msg"]
    assert target.pid not in [s["pid"] for s in result["signals"]]
    assert target.untouched()
    assert site.master_pid() == master and site.version() == "1.0.0"
    assert traffic.failures == []
    Path(second_pidfile(site)).unlink(missing_ok=True)


class SquattedSocket:
    """A server bound where the master's control socket was, answering what a hostile app would: a failed re-exec
    naming the victim's PID, and every worker ready."""

    def __init__(self, path, victim_pid, workers, victim_as_worker=False):
        self.path = path
        self.victim_pid = victim_pid
        self.workers = workers + ([victim_pid] if victim_as_worker else [])
        self.requests = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        os.unlink(path)
        self.sock.bind(path)
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def reply(self):
        return {
            "master": {
                "pid": self.victim_pid,
                "last_upgrade": {"outcome": "failed", "pid": self.victim_pid, "at": time.time(), "error": "squatted"},
            },
            "workers": [{"pid": pid, "state": "ready"} for pid in self.workers],
            "config": {"preload_app": False, "workers": len(self.workers)},
        }

    def serve(self):
        deadline = time.time() + 120
        while not self.stop.is_set() and time.time() < deadline:
            try:
                conn = self.sock.accept()[0]
            except OSError:
                continue
            with conn:
                try:
                    conn.settimeout(2)
                    (length,) = struct.unpack(">I", conn.recv(4))
                    request = json.loads(conn.recv(length))
                    payload = json.dumps({"id": request.get("id"), "status": "ok", "data": self.reply()}).encode()
                    conn.sendall(struct.pack(">I", len(payload)) + payload)
                    self.requests += 1
                except (OSError, ValueError, struct.error):
                    pass

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def test_squatted_control_socket_cannot_name_a_pid_to_kill(make_site, module, victim):
    from proctree import children as _children

    site = make_site(kind="wsgi", worker_class="sync", arbiter="graceful", workers=2)
    one_release(site)
    master = site.master_pid()
    target = victim()
    path = str(Path(site.control_socket).with_name(f"control.{master}.sock"))
    assert os.path.exists(path), os.listdir(Path(site.control_socket).parent)
    squatter = SquattedSocket(path, target.pid, _children(master))
    try:
        result = module("gunicorn_upgrade", base_args(site, bake_seconds=1, spawn_timeout=10))
    finally:
        squatter.close()
    site.track()
    assert squatter.requests > 0
    assert result.get("failed") is True
    assert result["failed_phase"] == "spawn"
    assert (
        f"refused the control socket's report of a failed re-exec: it names PID {target.pid}, which is running: "
        f"it is not a child of master {master}"
    ) in result["msg"]
    assert target.pid not in [s["pid"] for s in result["signals"]]
    assert result["new_master"] != target.pid
    assert target.untouched()
    assert site.master_pid() == master and site.healthy()


def test_rewritten_working_directory_does_not_steer_the_restore(make_site, load, module, tmp_path):
    """A preloaded app moves the master into a directory of its own that looks like a release: the rollback
    refuses to restore `current` from it, says so, and changes nothing outside the instance's tree."""
    from proctree import children as _children

    evil = tmp_path / "evil" / "releases" / "v1"
    evil.mkdir(parents=True)
    planted = tmp_path / "evil" / "current"
    os.symlink(tmp_path / "evil" / "releases" / "v1", planted)
    site = make_site(kind="wsgi", worker_class="sync", arbiter="graceful", workers=2, preload=True)
    v1 = site.release("v1", "1.0.0")
    init = v1 / site.module / "__init__.py"
    init.write_text(init.read_text() + f"\nos.chdir({str(evil)!r})\nos.environ['PWD'] = {str(planted)!r}\n")
    # The app re-executes from the directory it moved to: give it the code there, so the upgrade gets to the bake.
    shutil.copytree(v1 / site.module, evil / site.module)
    site.release("v2", "2.0.0")
    site.switch("v1")
    site.start()
    site.switch("v2")
    old_master = site.master_pid()
    assert os.readlink(f"/proc/{old_master}/cwd") == str(evil)
    holder = {}

    def run():
        holder["result"] = module("gunicorn_upgrade", base_args(site, bake_seconds=15, release_link=str(site.current)))

    with load(site.url, threads=2, seconds=90, max_requests=40000):
        thread = threading.Thread(target=run)
        thread.start()
        killed = None
        deadline = time.time() + 60
        while time.time() < deadline and killed is None:
            time.sleep(0.2)
            try:
                new_master = int(Path(second_pidfile(site)).read_text().strip())
            except (OSError, ValueError):
                continue
            site.pids_seen.add(new_master)
            old_workers = [p for p in _children(old_master) if p != new_master]
            if not old_workers and _children(new_master):
                time.sleep(1.0)  # well into the bake
                site.track()
                os.kill(new_master, 9)
                killed = new_master
        thread.join(timeout=120)
    site.track()
    result = holder["result"]
    assert killed
    assert result["failed_phase"] == "bake"
    assert result["rolled_back"] is True, result["msg"]
    assert result["release_link_restored"] is None
    reason = f"{evil} (the old master's working directory) is not a release under {site.root / 'releases'}"
    assert f"the release link was not restored: {reason}" in result["msg"]
    assert os.readlink(site.current) == str(site.root / "releases" / "v2")
    assert os.readlink(planted) == str(tmp_path / "evil" / "releases" / "v1")
    assert sorted(os.listdir(tmp_path / "evil")) == ["current", "releases"]
    assert sorted(os.listdir(tmp_path / "evil" / "releases")) == ["v1"]
    assert site.master_pid() == old_master and site.healthy()


def test_squatted_control_socket_naming_a_stranger_as_a_worker_is_refused(make_site, module, victim):
    from proctree import children as _children

    site = make_site(kind="wsgi", worker_class="sync", arbiter="graceful", workers=2)
    one_release(site)
    master = site.master_pid()
    target = victim()
    path = str(Path(site.control_socket).with_name(f"control.{master}.sock"))
    squatter = SquattedSocket(path, target.pid, _children(master), victim_as_worker=True)
    expected = (
        f"refused the control socket's report of PID {target.pid} as a worker of master {master}: "
        f"it is not a child of master {master}"
    )
    try:
        for name in ("gunicorn_upgrade", "gunicorn_reload", "gunicorn_refresh"):
            result = module(name, base_args(site, **({"bake_seconds": 1} if name == "gunicorn_upgrade" else {})))
            assert result.get("failed") is True, (name, result)
            assert result["failed_phase"] == "preflight", (name, result["msg"])
            assert expected in result["msg"], (name, result["msg"])
    finally:
        squatter.close()
    assert squatter.requests >= 3
    assert target.untouched()
    assert site.master_pid() == master and site.healthy()
