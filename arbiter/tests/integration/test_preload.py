"""Preload sharing: pre-imports, gc.freeze and the master's warm-up call, for each worker class."""

import http.client
import json

import pytest

from .harness import wait_for

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["sync", "gthread", "asgi", "uvicorn"])
def test_master_warms_the_preloaded_app_up_and_workers_serve_and_retire(master_factory, kind):
    master = master_factory(kind, workers=2, preload_app=True, worker_preimport=["auto"], worker_preload_warmup=True)
    master.start()
    assert "Warm-up in the master: GET /health: 200" in master.log()
    first = master.ready_pids()
    master.refresh()
    assert master.wait_refresh_done(0)["outcome"] == "succeeded"
    master.wait_ready()
    assert not first & master.ready_pids()
    conn = http.client.HTTPConnection(*master.url()[:2], timeout=10)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200 and body["pid"] in master.ready_pids()
    wait_for(lambda: all(f"Worker (pid:{pid}) " in master.log() for pid in first), 30, what="old workers reaped")
    # Retired preloaded workers leave through exit_without_teardown: a clean status, not a crash
    # (uvicorn ends its workers by re-raising SIGTERM itself).
    clean = "stopped on the SIGTERM it was sent" if kind == "uvicorn" else "exited with code 0"
    for pid in first:
        assert f"Worker (pid:{pid}) {clean}" in master.log()
    assert "Traceback" not in master.log()
