"""gunicorn_info against real masters: stock and the bundled arbiter, and during an upgrade in flight."""

import os
import signal
import time

import pytest

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("arbiter", ["stock", "graceful"])
def test_info_reports_master_workers_and_memory(make_site, module, arbiter):
    site = make_site(kind="wsgi", worker_class="sync", arbiter=arbiter, workers=2)
    site.release("v1", "1.0.0")
    site.switch("v1")
    site.start()
    time.sleep(1.1)  # workers count as ready once worker_ready_seconds old
    args = {
        "pidfile": site.pidfile,
        "config": site.config,
        "control_socket": site.control_socket,
        "health_url": site.url,
        "check_health": True,
    }
    result = module("gunicorn_info", args, check_mode=True)
    assert not result.get("failed"), result.get("msg")
    assert result["changed"] is False
    assert result["master"]["pid"] == site.master_pid()
    assert result["master"]["flavour"] == arbiter
    assert result["worker_count"] == 2 and result["ready_workers"] == 2
    assert all(w["rss"] > 0 and w["pss"] > 0 and w["age"] > 0 for w in result["workers"])
    assert result["memory"]["pss"] > 0
    assert result["upgrade_in_flight"] is False and result["new_master"] is None
    assert result["health"]["ok"] is True
    assert result["unit"]["checked"] is False
    if arbiter == "graceful":
        assert result["arbiter_status"] is not None
        assert result["generation"] is not None

    os.kill(site.master_pid(), signal.SIGUSR2)
    deadline = time.time() + 20
    while not os.path.exists(site.pidfile + ".2") and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    site.track()
    result = module("gunicorn_info", args)
    assert result["upgrade_in_flight"] is True
    assert result["new_master"]["pid"] != result["master"]["pid"]
    assert len(result["new_master"]["workers"]) == 2
    assert {w["pid"] for w in result["workers"]}.isdisjoint({w["pid"] for w in result["new_master"]["workers"]})
