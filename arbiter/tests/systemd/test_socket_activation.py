"""Socket activation under a real systemd: a .socket unit holds the listener, the Type=notify
service serves from it. A USR2 upgrade (PIDFile hand-over) keeps the service active and serving;
`systemctl restart` under keep-alive load refuses no connection; a rotated environment file
reaches the workers at `systemctl reload`.

Boots its own systemd-nspawn test host with tests/lab/lab.py and always tears it down.
"""

import hashlib
import http.client
import json
import time

from ..integration.harness import Load
from .conftest import LAB_MARKS, wait_for

pytestmark = LAB_MARKS

# `bind` names a port nothing listens on: the service serves the socket unit's 8000.
CONFIG = """
bind = "0.0.0.0:8100"
workers = 2
worker_class = "gthread"
threads = 4
pidfile = "/run/gunicorn-demo/master.pid"
control_socket = "/run/gunicorn-demo/control.sock"
worker_health_path = "/health"
graceful_timeout = 10
keepalive = 5
"""

SOCKET = """
[Unit]
Description=graceful-gunicorn demo listener on 0.0.0.0:8000

[Socket]
ListenStream=0.0.0.0:8000
Service=demo.service

[Install]
WantedBy=sockets.target
"""

UNIT = """
[Unit]
Description=graceful-gunicorn demo
Requires=demo-listen-test.socket
After=demo-listen-test.socket

[Service]
Type=notify
NotifyAccess=all
KillMode=mixed
PIDFile=/run/gunicorn-demo/master.pid
RuntimeDirectory=gunicorn-demo
Sockets=demo-listen-test.socket
WorkingDirectory=/opt/demo
EnvironmentFile=/etc/gunicorn/demo/environment
Environment=GRACEFUL_GUNICORN_ENV_FILE=/etc/gunicorn/demo/environment
ExecStart=/opt/demo/venv/bin/graceful-gunicorn -c /etc/gunicorn/demo/gunicorn.conf.py graceful_demo_wsgi:app
ExecReload=/bin/kill -HUP $MAINPID
TimeoutStopSec=30
"""


def secret_digest(host) -> str:
    conn = http.client.HTTPConnection(host.address, 8000, timeout=10)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        return json.loads(conn.getresponse().read())["secret_sha256"]
    finally:
        conn.close()


def test_socket_unit_survives_usr2_and_restart(host, tmp_path):
    host.install_demo(tmp_path, CONFIG, {"demo-listen-test.socket": SOCKET, "demo.service": UNIT})
    host.ssh(
        "cat > /etc/gunicorn/demo/environment && chmod 0640 /etc/gunicorn/demo/environment",
        input='DEMO_SECRET="one-7d41c0"\n',
    )
    host.ssh("systemctl start demo-listen-test.socket demo.service")
    first = host.main_pid()
    wait_for(lambda: host.status(first)["ready_workers"] == 2, 60, "two ready workers")
    assert host.ssh("ss -Hltn 'sport = :8100'") == ""

    # USR2, then WINCH and TERM of the old master, as the collection's modules retire it.
    with Load(8000, host=host.address, threads=6, seconds=120, mode="keepalive") as load:
        time.sleep(1)
        host.ssh(f"kill -USR2 {first}")
        new = wait_for(lambda: int(host.ssh("cat /run/gunicorn-demo/master.pid.2")), 30, "new master")
        wait_for(lambda: host.status(new)["ready_workers"] == 2, 60, "new master's workers ready")
        host.ssh(f"kill -WINCH {first}")
        wait_for(lambda: not host.status(first)["workers"], 30, "old master drained")
        host.ssh(f"kill -TERM {first}")
        wait_for(lambda: host.gone(first), 30, "old master exit")
        time.sleep(2)
        load.stop()
    print(f"\nlab USR2 under socket activation: requests={load.total} failed={len(load.failures)}")
    assert host.ssh("systemctl is-active demo", check=False) == "active", host.ssh("journalctl -u demo -n 50")
    assert host.main_pid() == new
    assert load.ok > 100 and load.failures == [], load.failures[:5]
    assert host.ssh("readlink /run/gunicorn-demo/control.sock") == f"control.{new}.sock"

    # A rotated secret reaches the workers at reload, read from the file by the arbiter.
    before = secret_digest(host)
    host.ssh("cat > /etc/gunicorn/demo/environment", input='DEMO_SECRET="two-93be5a"\n')
    host.ssh("systemctl reload demo")
    two = hashlib.sha256(b"two-93be5a").hexdigest()[:12]
    wait_for(lambda: all(secret_digest(host) == two for _attempt in range(10)), 60, "the rotated secret served")
    assert before == hashlib.sha256(b"one-7d41c0").hexdigest()[:12]

    # A restart: the socket unit keeps listening while the master stops drained and starts again.
    with Load(8000, host=host.address, threads=6, seconds=120, mode="keepalive") as load:
        time.sleep(1)
        host.ssh("systemctl restart demo")
        third = host.main_pid()
        wait_for(lambda: host.status(third)["ready_workers"] == 2, 60, "restarted master's workers ready")
        time.sleep(2)
        load.stop()
    print(f"lab restart under socket activation: requests={load.total} failed={len(load.failures)}")
    assert third not in (0, new)
    assert load.ok > 100 and load.failures == [], load.failures[:5]
    assert host.ssh("systemctl is-active demo-listen-test.socket", check=False) == "active"

    host.ssh("systemctl stop demo")
    assert host.ssh("systemctl show -p Result --value demo") == "success"
    assert host.ssh("systemctl is-active demo-listen-test.socket", check=False) == "active"
    journal = host.ssh("journalctl -u demo --no-pager")
    assert "Handed the pidfile" in journal
    assert "the socket units keep listening" in journal
    # Values never reach the journal (only names and counts do).
    assert "one-7d41c0" not in journal and "two-93be5a" not in journal
