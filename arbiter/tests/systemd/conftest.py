"""A systemd-nspawn test host (tests/lab/lab.py) with the demo WSGI app and this arbiter installed.

Each test boots its own host and always tears it down. The demo app goes to /opt/demo/venv, its
configuration to /etc/gunicorn/demo/, its runtime files to /run/gunicorn-demo/. LAB_RELEASE picks the host's
Debian release (bookworm unless set; make test-matrix runs these tests on bullseye and trixie too).
"""

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
LAB = ROOT / "tests/lab/lab.py"
# The lab's own SSH command line (key, no host-key prompts, batch mode), rather than a copy of it.
_lab_spec = importlib.util.spec_from_file_location("lab", LAB)
lab = importlib.util.module_from_spec(_lab_spec)
_lab_spec.loader.exec_module(lab)
WHEELHOUSE = ROOT / "build/wheelhouse"
RELEASE = lab.parse_releases(os.environ.get("LAB_RELEASE") or lab.DEFAULT_RELEASE)[0]

# Applied by each test module as `pytestmark = LAB_MARKS`.
LAB_MARKS = [
    pytest.mark.systemd,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: the test host is a systemd-nspawn container"),
    pytest.mark.skipif(not shutil.which("systemd-nspawn"), reason="needs systemd-nspawn (Debian: systemd-container)"),
]


class Host:
    def __init__(self, name: str):
        self.name = name
        self.key = ROOT / ".lab" / name / "id_ed25519"
        self.address = None
        self.release = RELEASE
        # The Python the demo's venv is made with: the release's own, or the one the lab builds where that is too old.
        self.python = lab.RELEASES[RELEASE]["app_python"]

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

    def main_pid(self, unit: str = "demo") -> int:
        return int(self.ssh(f"systemctl show -p MainPID --value {unit}"))

    def status(self, pid: int) -> dict:
        out = self.ssh(f"/opt/demo/venv/bin/python -m graceful_arbiter.client /run/gunicorn-demo/control.{pid}.sock")
        return json.loads(out)

    def gone(self, pid: int) -> bool:
        return self.ssh(f"test -e /proc/{pid} || echo gone") == "gone"

    def install_demo(self, tmp: Path, config: str, units: dict[str, str]) -> None:
        """Install the demo app and this arbiter, write the config and the units, daemon-reload."""
        wheels = wheelhouse(tmp)
        self.ssh("mkdir -p /opt/demo /etc/gunicorn/demo /tmp/wheels")
        tar = subprocess.run(["tar", "-C", wheels, "-cf", "-", "."], capture_output=True, check=True).stdout
        subprocess.run(
            [*lab.ssh_cmd(self.key, self.address), "tar -C /tmp/wheels -xf -"], input=tar, check=True, timeout=120
        )
        self.ssh(
            f"{self.python} -m venv /opt/demo/venv && /opt/demo/venv/bin/pip install -q --no-index "
            "--find-links /tmp/wheels graceful-gunicorn-arbiter 'graceful-demo-wsgi==1.0.0'"
        )
        self.ssh("cat > /etc/gunicorn/demo/gunicorn.conf.py", input=config)
        for name, text in units.items():
            self.ssh(f"cat > /etc/systemd/system/{name}", input=text)
        self.ssh("systemctl daemon-reload")


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


def wheelhouse(tmp: Path) -> Path:
    """The project's wheelhouse without its arbiter wheel, plus a wheel of this arbiter."""
    if not list(WHEELHOUSE.glob("gunicorn-*.whl")):
        subprocess.run([sys.executable, ROOT / "tests/lab/build_wheelhouse.py"], check=True, timeout=600)
    out = tmp / "wheelhouse"
    out.mkdir()
    for wheel in WHEELHOUSE.glob("*.whl"):
        if not wheel.name.startswith("graceful_gunicorn_arbiter"):
            shutil.copy(wheel, out)
    # flit_core, the arbiter's build backend, is in the controller venv (tests/requirements-controller.txt)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", out, ROOT / "arbiter"],
        check=True,
    )
    return out


def _raise_interrupt(*_):
    raise KeyboardInterrupt("SIGTERM")


@pytest.fixture
def host():
    name = f"au{os.getpid() % 10000}"
    host = Host(name)
    # A time-out from outside (CI, make test-matrix) sends SIGTERM: unwind through the finally, so the lab goes down.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        out = subprocess.run(
            [sys.executable, LAB, "up", "--name", name, "--hosts", "1", "--release", RELEASE],
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
        signal.signal(signal.SIGTERM, previous)
