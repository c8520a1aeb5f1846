"""Run the examples/awx wrapper playbooks the way AWX runs a job: through ansible-runner, on lab hosts.

AWX gives every job a private data directory and runs `ansible-runner run DIR -p PLAYBOOK` in its
execution environment. Here the same layout is built by hand (no AWX server, no container, which
cannot run here): DIR/project holds the wrappers (the AWX project), DIR/inventory/hosts the lab's hosts
with the role's variables as group variables (as an AWX inventory carries them), DIR/env/extravars the
survey's answers, DIR/env/cmdline the job's Limit. ansible-runner itself, ansible-playbook, the SSH
connections, systemd and gunicorn on the hosts are all real.

One three-host lab (tests/lab/lab.py) serves the whole session: booted here unless the session already
runs inside `lab.py run` (LAB_INVENTORY set), deployed once, and torn down at the end, on failure and
on SIGTERM too.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from harness import (
    APP_PACKAGE,
    AWX_PROJECT,
    BIN,
    BROKEN_RELEASE,
    COLLECTION_LINK,
    COLLECTIONS,
    DEMO_VARS,
    INSTANCE,
    JOB_TIMEOUT,
    LAB_NAME,
    LAB_PY,
    OUT,
    PORT,
    REPO,
    WHEELHOUSE,
    WHEELHOUSE_NEEDS,
)

# ---------------------------------------------------------------- the lab


@dataclass
class Lab:
    name: str
    bridge: str
    key: str
    hosts: dict  # inventory name -> address
    network_unused: str  # an address on the lab's bridge that no host answers
    host_vars: dict = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return sorted(self.hosts)

    def check_route(self, *addresses: str) -> None:
        """lab.py's check: refuse any address whose route does not go through the lab's bridge."""
        subprocess.run([sys.executable, str(LAB_PY), "check-route", "--name", self.name, *addresses], check=True)

    def ssh(self, host: str, *command: str) -> str:
        address = self.hosts[host]
        self.check_route(address)
        res = subprocess.run(
            ["ssh", "-i", self.key, "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", f"root@{address}", *command],
            capture_output=True, text=True, timeout=30, check=True,
        )  # fmt: skip
        return res.stdout.strip()

    def main_pid(self, host: str) -> int:
        """The master systemd follows: MainPID of the instance's unit (0 when it runs nothing)."""
        return int(self.ssh(host, "systemctl", "show", "-p", "MainPID", "--value", f"gunicorn-{INSTANCE}.service"))

    def served(self, host: str) -> str | None:
        """The release the host answers with over HTTP (GET /version), or None when nothing answers."""
        address = self.hosts[host]
        self.check_route(address)
        try:
            with urllib.request.urlopen(f"http://{address}:{PORT}/version", timeout=5) as response:
                return json.load(response)["version"]
        except OSError:
            return None

    def fleet(self) -> dict:
        return {h: {"served": self.served(h), "main_pid": self.main_pid(h)} for h in self.names}


def _lab_from_inventory(inventory: Path, name: str) -> Lab:
    data = yaml.safe_load(inventory.read_text())
    top = data["all"]
    hosts = {h: hv["ansible_host"] for h, hv in top["children"]["gunicorn_hosts"]["hosts"].items()}
    meta = json.loads((inventory.parent / "lab.json").read_text())
    network = meta["network"]
    prefix = network.rsplit(".", 1)[0]
    # lab.py gives hosts .11 upwards; .250 is on the bridge's /24 and nobody holds it.
    unused = f"{prefix}.250"
    assert unused not in hosts.values()
    return Lab(name, top["vars"]["lab_bridge"], top["vars"]["ansible_ssh_private_key_file"], hosts, unused)


@pytest.fixture(scope="session")
def lab():
    if os.geteuid() != 0:
        pytest.skip("the lab's hosts are systemd-nspawn containers on a bridge: run as root")
    if not WHEELHOUSE.is_dir():
        pytest.skip(f"no wheelhouse at {WHEELHOUSE}: run `make wheelhouse`")
    if not COLLECTION_LINK.exists():
        COLLECTION_LINK.parent.mkdir(parents=True, exist_ok=True)
        COLLECTION_LINK.symlink_to(REPO)
    outer = os.environ.get("LAB_INVENTORY")
    booted_here = not outer
    name = os.environ.get("LAB_NAME", LAB_NAME) if outer else LAB_NAME
    # A CI time-out sends SIGTERM: make it unwind through the finalizers so that the lab goes down.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if booted_here:
            out = subprocess.run(
                [sys.executable, str(LAB_PY), "up", "--name", name, "--hosts", "3"],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            inventory = Path(out.stdout.strip().splitlines()[-1])
        else:
            inventory = Path(outer)
        found = _lab_from_inventory(inventory, name)
        assert len(found.hosts) >= 3, f"the AWX tests need three lab hosts, {inventory} has {len(found.hosts)}"
        found.hosts = dict(sorted(found.hosts.items())[:3])
        found.check_route(*found.hosts.values(), found.network_unused)
        yield found
    finally:
        if booted_here:
            subprocess.run([sys.executable, str(LAB_PY), "down", "--name", name], check=False)
        signal.signal(signal.SIGTERM, previous)


def _raise_interrupt(*_):
    raise KeyboardInterrupt("SIGTERM")


# ---------------------------------------------------------------- jobs


@dataclass
class Job:
    """One finished ansible-runner job, read from its artifacts as AWX reads them."""

    name: str
    private_data_dir: Path
    artifacts: Path
    rc: int
    status: str
    events: list
    stdout: str

    @property
    def stats(self) -> dict:
        found = [e for e in self.events if e.get("event") == "playbook_on_stats"]
        assert found, f"{self.name}: no playbook_on_stats event in {self.artifacts / 'job_events'}"
        return found[-1]["event_data"]

    @property
    def summary(self) -> dict | None:
        """The job stats AWX shows as the job's artifacts: set_stats data of the final stats event."""
        return (self.stats.get("artifact_data") or {}).get("gunicorn_rollout_summary")

    @property
    def failed_hosts(self) -> set:
        """AWX's "relaunch on failed hosts": hosts whose summary has failures or is unreachable (dark).

        A rescued failure is not a failure in the recap, so such a host is not picked.
        """
        stats = self.stats
        return {h for key in ("failures", "dark") for h, n in (stats.get(key) or {}).items() if n}

    def recap(self, key: str) -> set:
        return {h for h, n in (self.stats.get(key) or {}).items() if n}

    @property
    def hosts_acted_on(self) -> set:
        """Hosts any task ran on (runner_on_* events), delegation to the controller included."""
        return {
            e["event_data"]["host"]
            for e in self.events
            if e.get("event", "").startswith("runner_on_") and e.get("event_data", {}).get("host")
        }

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.stdout.splitlines()[-lines:])


@pytest.fixture(scope="session")
def run_job(lab):
    """run_job(name, playbook, extravars, limit=None, host_overrides=None) -> Job, through ansible-runner."""
    shutil.rmtree(OUT, ignore_errors=True)
    wheelhouse = OUT / "wheelhouse"
    wheelhouse.mkdir(parents=True)
    for pattern in WHEELHOUSE_NEEDS:
        found = sorted(WHEELHOUSE.glob(pattern))
        assert found, f"{WHEELHOUSE} has no {pattern}: run `make wheelhouse`"
        for wheel in found:
            shutil.copy2(wheel, wheelhouse / wheel.name)
    base_vars = yaml.safe_load(DEMO_VARS.read_text())
    base_vars["gunicorn_wheelhouse"] = str(wheelhouse)

    def run(name: str, playbook: str, extravars: dict, limit: str | None = None, host_overrides: dict | None = None):
        pdd = OUT / name
        (pdd / "env").mkdir(parents=True)
        (pdd / "inventory").mkdir()
        shutil.copytree(AWX_PROJECT, pdd / "project", ignore=shutil.ignore_patterns("*.json", "*.md"))
        hosts = {}
        for host, address in lab.hosts.items():
            hv = {"ansible_host": address, **lab.host_vars.get(host, {}), **(host_overrides or {}).get(host, {})}
            lab.check_route(hv["ansible_host"])
            hosts[host] = hv
        inventory = {
            "all": {
                "vars": {
                    "ansible_user": "root",
                    "ansible_ssh_private_key_file": lab.key,
                    "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
                    " -o LogLevel=ERROR -o ConnectTimeout=5",
                    "ansible_python_interpreter": "/usr/bin/python3",
                },
                "children": {"gunicorn_hosts": {"hosts": hosts, "vars": base_vars}},
            }
        }
        (pdd / "inventory" / "hosts").write_text(yaml.safe_dump(inventory, sort_keys=False))
        (pdd / "env" / "extravars").write_text(json.dumps(extravars, indent=2) + "\n")
        if limit:
            (pdd / "env" / "cmdline").write_text(f"--limit {limit}\n")
        envvars = {
            "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_CONFIG": str(REPO / "tests" / "ansible.cfg"),
            "ANSIBLE_FORCE_COLOR": "0",
        }
        (pdd / "env" / "envvars").write_text(json.dumps(envvars) + "\n")
        env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}")
        cmd = [str(BIN / "ansible-runner"), "run", str(pdd), "-p", playbook, "--ident", name]
        print("$ " + " ".join(cmd), flush=True)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)  # fmt: skip
        try:
            stdout = proc.communicate(timeout=JOB_TIMEOUT)[0]
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            stdout = proc.communicate(timeout=30)[0]
            pytest.fail(f"{name}: ansible-runner did not finish in {JOB_TIMEOUT}s\n{stdout[-4000:]}")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        (pdd / "runner-stdout.txt").write_text(stdout)
        artifacts = pdd / "artifacts" / name
        events = [
            json.loads(path.read_text())
            for path in sorted((artifacts / "job_events").glob("*.json"), key=lambda p: int(p.name.split("-", 1)[0]))
        ]
        job = Job(
            name=name,
            private_data_dir=pdd,
            artifacts=artifacts,
            rc=int((artifacts / "rc").read_text().strip()),
            status=(artifacts / "status").read_text().strip(),
            events=events,
            stdout=stdout,
        )
        print(job.tail(40), flush=True)
        return job

    return run


@pytest.fixture(scope="session")
def deployed(lab, run_job):
    """Release 1.0.0 on every host through the deploy wrapper; the second host cannot import BROKEN_RELEASE."""
    broken_host = lab.names[1]
    lab.host_vars[broken_host] = {"gunicorn_environment": {"DEMO_BROKEN_VERSIONS": BROKEN_RELEASE}}
    extravars = {
        "gunicorn_instance": INSTANCE,
        "gunicorn_release": "1.0.0",
        "gunicorn_app_package": APP_PACKAGE,
        "gunicorn_serial": "100%",
    }
    job = run_job("deploy", "deploy.yml", extravars)
    assert (job.rc, job.status) == (0, "successful"), f"the deploy failed:\n{job.tail()}"
    deadline = time.monotonic() + 30
    while {lab.served(h) for h in lab.names} != {"1.0.0"} and time.monotonic() < deadline:
        time.sleep(1)
    assert {h: lab.served(h) for h in lab.names} == dict.fromkeys(lab.names, "1.0.0")
    return lab
