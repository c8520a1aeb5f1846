"""Rolling refresh under load: on demand, periodic and HUP, for each worker class."""

import signal

import pytest

from .harness import CapacityWatch, Load

pytestmark = pytest.mark.slow

CASES = [
    ("sync", False),
    ("gthread", False),
    ("gthread", True),
    ("asgi", False),
    ("asgi", True),
    ("uvicorn", False),
    ("uvicorn", True),
]


@pytest.mark.parametrize(("kind", "preload"), CASES, ids=[f"{k}{'-preload' if p else ''}" for k, p in CASES])
def test_refresh_on_demand_periodic_and_hup_fail_no_request(master_factory, kind, preload):
    master = master_factory(kind, workers=2, preload_app=preload, worker_refresh_interval=4, worker_refresh_jitter=0)
    master.start()
    first = master.ready_pids()
    with Load(master.port, threads=4, seconds=60) as load, CapacityWatch(master) as capacity:
        master.refresh()
        manual = master.wait_refresh_done(0)
        second = master.ready_pids()
        periodic = master.wait_refresh_done(manual["id"])
        master.signal(signal.SIGHUP)
        hup = master.wait_refresh_done(periodic["id"])
        master.wait_ready()
        load.stop()
    assert [r["outcome"] for r in (manual, periodic, hup)] == ["succeeded"] * 3, master.log()
    assert {r["trigger"] for r in (manual, periodic, hup)} == {"manual", "periodic", "hup"}
    assert not first & second, "the on-demand refresh replaced every worker"
    assert master.status()["config"]["hup_reloads_code"] is (not preload)
    assert capacity.samples > 5 and capacity.lowest >= 2, f"capacity dropped to {capacity.lowest}"
    assert load.ok > 50
    if kind == "asgi":
        # It may close a kept-alive connection on SIGTERM after a response that did not announce
        # it (README, "Keep-alive clients"); clients opening a connection per request lose nothing.
        assert len(load.failures) == load.keepalive_failures, load.failures[:5]
    elif kind == "uvicorn":
        # uvicorn also resets, rarely, a new connection it accepted just before shutting down (README).
        assert len(load.failures) <= load.total / 100, load.failures[:5]
    else:
        assert load.failures == [], load.failures[:5]
