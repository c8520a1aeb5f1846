"""New workers that cannot serve never take the old ones or the master down."""

import os
import signal
import subprocess
import time

import pytest

from .harness import CapacityWatch, Load, wait_for

pytestmark = pytest.mark.slow

DRILLS = [
    ("sync", "import-error", "exited with code"),
    ("sync", "health-error", "answered 500"),
    ("sync", "hang-startup", "worker_boot_timeout"),
    ("asgi", "import-error", "exited with code"),
    ("asgi", "health-error", "answered 500"),
    ("uvicorn", "hang-startup", "worker_boot_timeout"),
]


@pytest.mark.parametrize(("kind", "behaviour", "reason"), DRILLS, ids=[f"{k}-{b}" for k, b, _reason in DRILLS])
def test_bad_new_worker_aborts_refresh_and_old_workers_keep_serving(master_factory, kind, behaviour, reason):
    master = master_factory(kind, workers=2, worker_boot_timeout=4, worker_refresh_backoff=60)
    master.start()
    old = master.ready_pids()
    master.drill(behaviour)
    with Load(master.port, threads=2, seconds=30) as load:
        master.refresh()
        failed = master.wait_refresh_done(0)
        time.sleep(0.5)
        assert master.proc.poll() is None, master.log()
        assert master.ready_pids() == old
        status = master.status()
        load.stop()
    assert failed["outcome"] == "failed"
    assert reason in failed["error"], failed
    assert status["refresh"]["consecutive_failures"] == 1
    assert status["refresh"]["retry_in"] > 30, "automatic retries back off"
    assert reason in status["last_boot_failure"]["reason"]
    assert load.ok > 20 and load.keepalive_failures == len(load.failures) == 0, load.failures[:5]
    # Fixed code: an explicit refresh does not wait for the back-off and succeeds.
    master.drill("ok")
    master.refresh()
    assert master.wait_refresh_done(failed["id"])["outcome"] == "succeeded"
    assert not master.ready_pids() & old


def test_guarded_hup_with_bad_code_keeps_old_generation(master_factory):
    master = master_factory("gthread", workers=2, worker_refresh_backoff=60)
    master.start()
    old = master.ready_pids()
    master.write_config(raw_env=["DEMO_BEHAVIOUR=import-error"])
    with Load(master.port, threads=2, seconds=30) as load:
        master.signal(signal.SIGHUP)
        failed = master.wait_refresh_done(0)
        load.stop()
    assert failed["trigger"] == "hup" and failed["outcome"] == "failed", failed
    assert master.ready_pids() == old
    assert load.failures == []
    master.write_config(raw_env=[])
    master.signal(signal.SIGHUP)
    assert master.wait_refresh_done(failed["id"])["outcome"] == "succeeded"


def test_broken_config_on_hup_keeps_master(master_factory):
    master = master_factory("sync", workers=1)
    master.start()
    (master.dir / "gunicorn.conf.py").write_text("this is not python(\n")
    master.signal(signal.SIGHUP)
    status = wait_for(lambda: (s := master.status())["last_reload"] and s, 20, what="reload outcome")
    assert status["last_reload"]["outcome"] == "failed"
    assert master.proc.poll() is None and len(master.ready_pids()) == 1


def test_first_start_boot_failure_stops_the_server(master_factory):
    master = master_factory("sync", workers=2)
    master.drill("import-error")
    master.start(wait=False)
    code = master.proc.wait(timeout=60)
    assert code in (3, 4), master.log()


def test_slow_import_keeps_capacity(master_factory):
    master = master_factory("gthread", workers=2, worker_refresh_batch_size=2)
    master.start()
    master.drill("slow-import")  # the demo app sleeps 5 s at import
    with Load(master.port, threads=2, seconds=60) as load, CapacityWatch(master) as capacity:
        master.refresh()
        done = master.wait_refresh_done(0, timeout=60)
        load.stop()
    assert done["outcome"] == "succeeded", master.log()
    assert capacity.samples > 20 and capacity.lowest >= 2
    assert load.failures == []


def test_stuck_old_worker_is_killed_after_graceful_timeout(master_factory):
    master = master_factory("sync", workers=1, graceful_timeout=2)
    master.start()
    (old,) = master.ready_pids()
    slow = subprocess.Popen(
        ["curl", "-s", "-o", "/dev/null", "-m", "60", f"http://127.0.0.1:{master.port}/slow?seconds=50"]
    )
    try:
        time.sleep(0.5)
        master.refresh()
        assert master.wait_refresh_done(0)["outcome"] == "succeeded"
        started = time.monotonic()
        wait_for(lambda: old not in {w["pid"] for w in master.status()["workers"]}, 20, what="old worker gone")
        assert time.monotonic() - started < 15
        assert "SIGKILL" in master.log()
    finally:
        slow.kill()
        slow.wait()


def test_memory_ceiling_replaces_workers(master_factory):
    master = master_factory("sync", workers=2, worker_max_memory="1M", worker_max_memory_metric="rss")
    master.start(wait=False)
    done = master.wait_refresh_done(0, timeout=60)
    assert done["trigger"] == "memory" and done["outcome"] == "succeeded", done


def test_watched_file_change_triggers_refresh(master_factory, tmp_path):
    watched = tmp_path / "release"
    watched.write_text("1")
    master = master_factory("sync", workers=1, worker_refresh_on_change=[str(watched)])
    master.start()
    old = master.ready_pids()
    watched.write_text("22")
    done = master.wait_refresh_done(0, timeout=30)
    assert done["trigger"] == "change" and done["outcome"] == "succeeded"
    assert not master.ready_pids() & old


def test_preload_status_says_hup_keeps_code(master_factory):
    master = master_factory("sync", workers=1, preload_app=True)
    master.start()
    config = master.status()["config"]
    assert config["preload_app"] is True and config["hup_reloads_code"] is False
    assert os.path.islink(master.dir / "control.sock")
