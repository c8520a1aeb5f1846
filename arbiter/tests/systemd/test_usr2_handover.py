"""USR2 under a real systemd (Type=notify, NotifyAccess=all, KillMode=mixed, PIDFile=): the unit
follows the new master, no request fails, and reload and stop reach the new master.

Boots its own systemd-nspawn test host with tests/lab/lab.py and always tears it down.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..integration.harness import Load

ROOT = Path(__file__).resolve().parents[3]
LAB = ROOT / "tests/lab/lab.py"
# The lab's own SSH command line (key, no host-key prompts, batch mode), rather than a copy of it.
_lab_spec = importlib.util.spec_from_file_location("lab", LAB)
lab = importlib.util.module_from_spec(_lab_spec)
_lab_spec.loader.exec_module(lab)
WHEELHOUSE = ROOT / "build/wheelhouse"

pytestmark = [
    pytest.mark.systemd,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the test host is a systemd-nspawn container"),
    pytest.mark.skipif(not shutil.which("systemd-nspawn"), reason="needs systemd-nspawn (Debian: systemd-container)"),
]

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


class Host:
    def __init__(self, name: str):
        self.name = name
        self.key = ROOT / ".lab" / name / "id_ed25519"
        self.address = None

    def ssh(self, command: str, check: bool = True, input: str | None = None) -> str:
        result = subprocess.run(
            [*lab.ssh_cmd(self.key, self.address), command],
            input=input,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{command!r} failed: {result.stdout}{result.stderr}")
        return result.stdout.strip()

    def main_pid(self) -> int:
        return int(self.ssh("systemctl show -p MainPID --value demo"))

    def status(self, pid: int) -> dict:
        import json

        out = self.ssh(f"/opt/demo/venv/bin/python -m graceful_arbiter.client /run/gunicorn-demo/control.{pid}.sock")
        return json.loads(out)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (AssertionError, ValueError, OSError):
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def host(tmp_path):
    name = f"au{os.getpid() % 10000}"
    host = Host(name)
    try:
        out = subprocess.run(
            [sys.executable, LAB, "up", "--name", name, "--hosts", "1"],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if out.returncode != 0:
            pytest.fail(f"lab host did not boot: {out.stderr[-500:]}")
        inventory = Path(out.stdout.strip().splitlines()[-1]).read_text()
        host.address = re.search(r"ansible_host:\s*([\d.]+)", inventory).group(1)
        route = subprocess.run(["ip", "route", "get", host.address], capture_output=True, text=True, check=True).stdout
        assert f"gg{name}" in route, f"{host.address} is not reached through the lab bridge: {route}"
        yield host
    finally:
        subprocess.run([sys.executable, LAB, "down", "--name", name], capture_output=True, timeout=300, check=False)


def wheelhouse(tmp: Path) -> Path:
    """The project's wheelhouse without its arbiter wheel, plus a wheel of this arbiter."""
    if not list(WHEELHOUSE.glob("gunicorn-*.whl")):
        subprocess.run([sys.executable, ROOT / "tests/lab/build_wheelhouse.py"], check=True, timeout=600)
    out = tmp / "wheelhouse"
    out.mkdir()
    for wheel in WHEELHOUSE.glob("*.whl"):
        if not wheel.name.startswith("graceful_gunicorn_arbiter"):
            shutil.copy(wheel, out)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, ROOT / "arbiter"], check=True)
    return out


def test_usr2_winch_term_under_systemd(host, tmp_path):
    wheels = wheelhouse(tmp_path)
    host.ssh("mkdir -p /opt/demo /etc/gunicorn/demo /tmp/wheels")
    tar = subprocess.run(["tar", "-C", wheels, "-cf", "-", "."], capture_output=True, check=True).stdout
    subprocess.run(
        [
            "ssh",
            "-i",
            str(host.key),
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            f"root@{host.address}",
            "tar -C /tmp/wheels -xf -",
        ],
        input=tar,
        check=True,
        timeout=120,
    )
    host.ssh(
        "python3 -m venv /opt/demo/venv && /opt/demo/venv/bin/pip install -q --no-index "
        "--find-links /tmp/wheels graceful-gunicorn-arbiter 'graceful-demo-wsgi==1.0.0'"
    )
    host.ssh("cat > /etc/gunicorn/demo/gunicorn.conf.py", input=CONFIG)
    host.ssh("cat > /etc/systemd/system/demo.service", input=UNIT)
    host.ssh("systemctl daemon-reload && systemctl start demo")
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
        wait_for(lambda: host.ssh(f"test -e /proc/{first} || echo gone") == "gone", 30, "old master exit")
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
