"""USR2 under a real systemd (Type=notify, NotifyAccess=all, KillMode=mixed, PIDFile=): the unit
follows the new master, no request fails, and reload and stop reach the new master.

Boots its own systemd-nspawn test host with tests/lab/lab.py and always tears it down.
"""

import time

from ..integration.harness import Load
from .conftest import LAB_MARKS, wait_for

pytestmark = LAB_MARKS

CONFIG = """
bind = "0.0.0.0:8000"
workers = 2
worker_class = "gthread"
threads = 4
pidfile = "/run/gunicorn-demo/master.pid"
control_socket = "/run/gunicorn-demo/control.sock"
worker_health_path = "/health"
graceful_timeout = 10
"""

UNIT = """
[Unit]
Description=graceful-gunicorn demo

[Service]
Type=notify
NotifyAccess=all
KillMode=mixed
PIDFile=/run/gunicorn-demo/master.pid
RuntimeDirectory=gunicorn-demo
WorkingDirectory=/opt/demo
ExecStart=/opt/demo/venv/bin/graceful-gunicorn -c /etc/gunicorn/demo/gunicorn.conf.py graceful_demo_wsgi:app
ExecReload=/bin/kill -HUP $MAINPID
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
"""


def test_usr2_winch_term_under_systemd(host, tmp_path):
    host.install_demo(tmp_path, CONFIG, {"demo.service": UNIT})
    host.ssh("systemctl start demo")
    first = host.main_pid()
    wait_for(lambda: host.status(first)["ready_workers"] == 2, 60, "two ready workers")

    with Load(8000, host=host.address, threads=4, seconds=90) as load:
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

    assert host.ssh("systemctl is-active demo", check=False) == "active", host.ssh("journalctl -u demo -n 50")
    assert host.main_pid() == new
    assert load.ok > 100 and load.failures == [], load.failures[:5]

    host.ssh("systemctl reload demo")
    reloaded = wait_for(
        lambda: (s := host.status(new))["refresh"]["last"] and s["refresh"]["last"]["trigger"] == "hup" and s, 60, "HUP"
    )
    assert reloaded["refresh"]["last"]["outcome"] == "succeeded"

    host.ssh("systemctl stop demo")
    assert host.ssh("systemctl show -p Result --value demo") == "success"
    assert host.ssh("systemctl is-active demo", check=False) == "inactive"
    journal = host.ssh("journalctl -u demo --no-pager")
    assert "Handed the pidfile" in journal
