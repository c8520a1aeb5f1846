"""gunicorn_upgrade against real masters on 127.0.0.1 under load: zero failed requests, rollbacks, refusals."""

import json
import os
import signal
import subprocess
import threading
import time

import pytest

pytestmark = pytest.mark.timeout(240)

RESULT_KEYS = {
    "flavour",
    "old_master",
    "new_master",
    "old_workers",
    "new_workers",
    "phases",
    "signals",
    "health",
    "unit",
    "failed_phase",
    "rolled_back",
    "release_link_restored",
    "release_switched",
    "duration",
    "notes",
}


def upgrade_args(site, **extra):
    args = {
        "pidfile": site.pidfile,
        "config": site.config,
        "control_socket": site.control_socket,
        "health_url": site.url,
        "bake_seconds": 2,
        "timeout": 30,
        # Without systemd and a root-owned instance manifest here, the operator names the link a rollback restores.
        "release_link": str(site.current),
    }
    args.update(extra)
    return args


def serving_v1_beside_v2(site, v2_behaviour="ok"):
    """v1 serving through `current`, v2 installed beside it: an upgrade with release=v2 switches the link."""
    site.release("v1", "1.0.0")
    site.release("v2", "2.0.0", behaviour=v2_behaviour)
    site.switch("v1")
    site.start()


def two_releases(site, v2_behaviour="ok"):
    serving_v1_beside_v2(site, v2_behaviour)
    site.switch("v2")


@pytest.mark.parametrize(
    ("kind", "worker_class", "arbiter"),
    [
        ("wsgi", "sync", "stock"),
        ("wsgi", "gthread", "graceful"),
        ("asgi", "asgi", "stock"),
        ("asgi", "uvicorn_worker.UvicornWorker", "graceful"),
    ],
)
def test_upgrade_under_load_fails_no_request(make_site, load, module, kind, worker_class, arbiter):
    site = make_site(kind=kind, worker_class=worker_class, arbiter=arbiter, workers=2)
    two_releases(site)
    old_master = site.master_pid()
    with load(site.url, threads=4, seconds=90, max_requests=40000) as traffic:
        result = module("gunicorn_upgrade", upgrade_args(site))
    site.track()
    print(
        f"upgrade {kind}/{worker_class}/{arbiter}: {result.get('duration', -1):.1f} s, {traffic.sent} requests,"
        f" {len(traffic.failures)} failed, {traffic.keepalive_races} keep-alive races retried"
    )
    assert not result.get("failed"), result["msg"]
    assert result["changed"] is True
    assert set(result) >= RESULT_KEYS
    assert result["flavour"] == arbiter
    assert result["old_master"] == old_master
    assert site.master_pid() == result["new_master"] != old_master
    assert [p["name"] for p in result["phases"]] == [
        "preflight",
        "spawn",
        "new_ready",
        "health_new",
        "drain_old",
        "bake",
        "retire_old",
        "promote",
    ]
    assert all(p["ok"] for p in result["phases"])
    assert result["unit"]["checked"] is False and result["unit"]["reason"]
    assert traffic.failures == []
    if worker_class in ("sync", "gthread"):  # asgi and uvicorn-worker close kept-alive connections unannounced
        assert traffic.keepalive_races == 0
    assert site.version() == "2.0.0"
    assert not os.path.exists(site.pidfile + ".2")


@pytest.mark.parametrize(
    ("behaviour", "arbiter", "phases"),
    [
        ("import-error", "graceful", {"spawn", "new_ready"}),
        ("import-error", "stock", {"spawn", "new_ready"}),
        ("health-error", "graceful", {"health_new", "bake"}),
        ("hang-startup", "graceful", {"new_ready"}),
    ],
)
def test_bad_release_rolls_back_and_v1_keeps_serving(make_site, load, module, behaviour, arbiter, phases):
    site = make_site(kind="wsgi", worker_class="sync", arbiter=arbiter, workers=2)
    two_releases(site, v2_behaviour=behaviour)
    old_master = site.master_pid()
    with load(site.url, threads=4, seconds=90, max_requests=40000) as traffic:
        result = module("gunicorn_upgrade", upgrade_args(site, timeout=10, spawn_timeout=10))
    site.track()
    print(
        f"rollback {behaviour}/{arbiter}: {result.get('duration', -1):.1f} s, phase {result.get('failed_phase')},"
        f" {traffic.sent} requests, {len(traffic.failures)} failed"
    )
    assert result.get("failed") is True
    assert result["rolled_back"] is True, result["msg"]
    assert result["failed_phase"] in phases
    assert f"failed in phase {result['failed_phase']}" in result["msg"]
    assert "rolled back" in result["msg"]
    assert traffic.failures == []
    assert site.master_pid() == old_master
    assert site.version() == "1.0.0"
    assert not os.path.exists(site.pidfile + ".2")


def test_upgrade_switches_the_release_link_after_its_checks(make_site, load, module):
    """release= points `current` at the release in phase switch, right before SIGUSR2; no request fails."""
    site = make_site(kind="wsgi", worker_class="gthread", arbiter="graceful", workers=2)
    serving_v1_beside_v2(site)
    old_master = site.master_pid()
    checked = module("gunicorn_upgrade", upgrade_args(site, release="v2"), check_mode=True)
    assert not checked.get("failed") and any("would point" in note for note in checked["notes"]), checked
    assert os.readlink(site.current) == str(site.root / "releases" / "v1")
    with load(site.url, threads=4, seconds=60, max_requests=30000) as traffic:
        result = module("gunicorn_upgrade", upgrade_args(site, release="v2"))
    site.track()
    assert not result.get("failed"), result["msg"]
    names = [p["name"] for p in result["phases"]]
    assert names[:3] == ["preflight", "switch", "spawn"], names
    assert result["release_switched"] == {
        "link": str(site.current),
        "from": str(site.root / "releases" / "v1"),
        "to": str(site.root / "releases" / "v2"),
    }
    assert os.readlink(site.current) == str(site.root / "releases" / "v2")
    assert site.master_pid() == result["new_master"] != old_master
    assert site.version() == "2.0.0"
    assert traffic.failures == []


@pytest.mark.parametrize(
    ("release", "problem", "phase"),
    [
        ("v3", "v3 cannot be read", "switch"),  # no such release
        ("../v1", "is not a release directory's name", None),  # refused with the options
        ("v2\n", "is not a release directory's name", None),  # a full-string check: no trailing newline slips in
    ],
)
def test_a_release_that_cannot_be_switched_to_changes_nothing(make_site, module, release, problem, phase):
    site = make_site(kind="wsgi", worker_class="sync", arbiter="graceful", workers=1)
    serving_v1_beside_v2(site)
    old_master = site.master_pid()
    checked = module("gunicorn_upgrade", upgrade_args(site, release=release), check_mode=True)
    assert checked["failed"] is True and problem in checked["msg"], checked["msg"]
    result = module("gunicorn_upgrade", upgrade_args(site, release=release))
    site.track()
    assert result["failed"] is True
    assert problem in result["msg"], result["msg"]
    if phase:
        assert result["failed_phase"] == phase and result["signals"] == [] and result["release_switched"] is None
    assert os.readlink(site.current) == str(site.root / "releases" / "v1")
    assert site.master_pid() == old_master
    assert site.version() == "1.0.0"


def test_a_switched_release_that_fails_is_rolled_back_with_its_link(make_site, load, module):
    site = make_site(kind="wsgi", worker_class="sync", arbiter="graceful", workers=2)
    serving_v1_beside_v2(site, v2_behaviour="import-error")
    old_master = site.master_pid()
    with load(site.url, threads=4, seconds=60, max_requests=30000) as traffic:
        result = module("gunicorn_upgrade", upgrade_args(site, release="v2", timeout=10, spawn_timeout=10))
    site.track()
    assert result["failed"] is True
    assert result["rolled_back"] is True, result["msg"]
    assert result["release_switched"]["to"] == str(site.root / "releases" / "v2")
    assert os.readlink(site.current) == str(site.root / "releases" / "v1")
    assert site.master_pid() == old_master
    assert site.version() == "1.0.0"
    assert traffic.failures == []


def test_new_master_killed_during_bake_rolls_back_to_old_code(make_site, load, module):
    site = make_site(kind="wsgi", worker_class="sync", arbiter="graceful", workers=2)
    two_releases(site)
    old_master = site.master_pid()
    holder = {}

    # The link to restore comes from a root-owned instance manifest beside the config, as the role writes it.
    (site.root / "instance.json").write_text(json.dumps({"current": str(site.current), "root": str(site.root)}))

    def run():
        holder["result"] = module(
            "gunicorn_upgrade", upgrade_args(site, bake_seconds=15, timeout=20, release_link=None)
        )

    with load(site.url, threads=4, seconds=90, max_requests=40000) as traffic:
        thread = threading.Thread(target=run)
        thread.start()
        killed = None
        deadline = time.time() + 60
        while time.time() < deadline and killed is None:
            time.sleep(0.2)
            try:
                with open(site.pidfile + ".2") as handle:
                    new_master = int(handle.read().strip())
            except (OSError, ValueError):
                continue
            site.pids_seen.add(new_master)
            old_workers = [p for p in _children(old_master) if p != new_master]
            if not old_workers and _children(new_master):
                time.sleep(1.0)  # well into the bake
                site.track()
                os.kill(new_master, signal.SIGKILL)
                killed = new_master
        thread.join(timeout=120)
    site.track()
    result = holder["result"]
    print(
        f"killed new master {killed}: phase {result.get('failed_phase')}, {traffic.sent} requests,"
        f" {len(traffic.failures)} failed"
    )
    assert killed
    assert result["failed_phase"] == "bake"
    assert result["rolled_back"] is True, result["msg"]
    assert result["release_link_restored"] == {
        "link": str(site.current),
        "from": str(site.root / "releases" / "v2"),
        "to": str(site.root / "releases" / "v1"),
    }
    assert os.readlink(site.current) == str(site.root / "releases" / "v1")
    assert site.master_pid() == old_master
    assert site.version() == "1.0.0"
    assert len(traffic.failures) <= 2, traffic.failures  # requests in flight on the SIGKILLed master's workers


def _children(pid):
    from proctree import children

    return children(pid)


def test_stale_pidfile_of_another_process_is_refused(make_site, module, tmp_path):
    site = make_site(kind="wsgi")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        pidfile = tmp_path / "master.pid"
        # Written before the process started: a PID the kernel reused after the master was gone.
        pidfile.write_text(f"{sleeper.pid}\n")
        os.utime(pidfile, (time.time() - 3600, time.time() - 3600))
        result = module("gunicorn_upgrade", {"pidfile": str(pidfile), "health_url": site.url})
        assert result["failed"] is True
        assert result["failed_phase"] == "preflight"
        assert "not the gunicorn master" in result["msg"]
        assert sleeper.poll() is None  # never signalled

        sleeper.kill()
        sleeper.wait()
        result = module("gunicorn_upgrade", {"pidfile": str(pidfile)})
        assert "stale pidfile" in result["msg"]
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
            sleeper.wait()


def test_foreign_config_is_refused(make_site, module, tmp_path):
    site = make_site(kind="wsgi")
    site.release("v1", "1.0.0")
    site.switch("v1")
    site.start()
    result = module("gunicorn_upgrade", {"pidfile": site.pidfile, "config": str(tmp_path / "other.conf.py")})
    assert result["failed"] is True and "runs config" in result["msg"]


def test_refuses_while_another_upgrade_is_in_flight_and_check_mode_changes_nothing(make_site, module):
    site = make_site(kind="wsgi", arbiter="graceful")
    site.release("v1", "1.0.0")
    site.switch("v1")
    site.start()
    master = site.master_pid()

    check = module("gunicorn_upgrade", upgrade_args(site), check_mode=True)
    assert check["changed"] is True and not check.get("failed")
    assert check["msg"].startswith("would send USR2")
    assert check["signals"] == [] and site.master_pid() == master
    assert not os.path.exists(site.pidfile + ".2")

    os.kill(master, signal.SIGUSR2)
    deadline = time.time() + 20
    while not os.path.exists(site.pidfile + ".2") and time.time() < deadline:
        time.sleep(0.1)
    site.track()
    result = module("gunicorn_upgrade", upgrade_args(site))
    site.track()
    assert result["failed"] is True
    assert "in flight" in result["msg"]
    assert result["failed_phase"] == "preflight"


def test_bad_arguments_fail_before_any_signal(make_site, module):
    site = make_site(kind="wsgi")
    result = module("gunicorn_upgrade", {"pidfile": site.pidfile, "health_url": "ftp://nope"})
    assert result["failed"] is True and "invalid options" in result["msg"]
    result = module("gunicorn_upgrade", {"pidfile": site.pidfile, "health_url": site.url, "health_socket": "/x"})
    assert result["failed"] is True and "mutually exclusive" in result["msg"]
