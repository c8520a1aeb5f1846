"""Rolling refresh under load: on demand, periodic and HUP, for each worker class."""

import http.client
import json
import os
import signal
import time

import pytest

from graceful_arbiter.client import ControlError, request

from .harness import CapacityWatch, Load, wait_for

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
    # Retiring workers drain their kept-alive connections (graceful_arbiter/drain.py).
    assert load.failures == [], load.failures[:5]


@pytest.mark.parametrize("kind", ["gthread", "asgi", "uvicorn"])
def test_retiring_worker_answers_the_next_request_on_an_idle_kept_alive_connection(master_factory, kind):
    """The client's next request after the worker was told to stop gets an answer, not a reset."""
    # A keep-alive timeout far longer than the test, so that only the drain can end the connection.
    master = master_factory(kind, workers=1, graceful_timeout=70, keepalive=30)
    master.start()
    conn = http.client.HTTPConnection(*master.url()[:2], timeout=10)
    try:
        conn.request("GET", "/")
        first = conn.getresponse()
        served_by = json.loads(first.read())["pid"]
        assert first.getheader("connection", "").lower() != "close"
        master.refresh()
        master.wait_refresh_done(0)
        wait_for(lambda: served_by not in master.ready_pids(), 10, what="the old worker retiring")
        time.sleep(0.5)  # the connection is idle, well inside its keep-alive timeout
        assert os.path.exists(f"/proc/{served_by}"), "the retiring worker is still draining"
        conn.request("GET", "/")
        second = conn.getresponse()
        body = json.loads(second.read())
    finally:
        conn.close()
    assert second.status == 200
    assert body["pid"] == served_by, "answered by the retiring worker, on the same connection"
    assert second.getheader("connection", "").lower() == "close"


def test_status_is_answered_at_once_while_a_refresh_forks_workers(master_factory):
    """gunicorn 27 stops its control thread around each fork; a client caught then got no answer."""
    master = master_factory("asgi", workers=4, preload_app=True)
    master.start()
    path = master.socket_of(master.pid)
    answered, unanswered = [], []

    def poll_brief_status() -> dict:
        started = time.monotonic()
        try:
            status = request(path, "graceful status brief", timeout=2, connect_retry=0)
        except (OSError, ControlError) as exc:
            unanswered.append(repr(exc))
            return {"refresh": {"last": None, "in_progress": True}}
        answered.append(time.monotonic() - started)
        return status

    last = 0
    for _round in range(3):
        master.refresh()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            refresh = poll_brief_status()["refresh"]
            if refresh["last"] and refresh["last"]["id"] > last and not refresh["in_progress"]:
                last = refresh["last"]["id"]
                break
        else:
            pytest.fail(f"refresh after {last} did not finish:\n{master.log()}")
    assert unanswered == [], unanswered[:3]
    assert len(answered) >= 3
    assert master.log().count("Control socket listening at") == 1, "the control socket was restarted"
    brief, full = master.command("graceful status brief"), master.status()
    assert "pss" in full["workers"][0] and "pss" not in brief["workers"][0]
    assert "age_seconds" in brief["workers"][0]
    with pytest.raises(ControlError, match="takes no argument or 'brief'"):
        master.command("graceful status everything")
