"""The server role's probe (tasks/plan.yml), run as it runs on a host, on files in a temporary tree.

systemctl is asked about a unit that does not exist, so the service reads as not active; everything else the probe
reads is real: files, modes, owners, links and globs. The owner checks need root (the role runs the probe as root).
"""

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from ansible_collections.graceful.gunicorn.plugins.filter.rollout_plan import parse_probe, rollout_plan

REPO = Path(__file__).resolve().parents[2]
PROBE_TASK = "Read what is live in one round trip"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the probe trusts only root's files: run as root")


def probe_script() -> str:
    tasks = yaml.safe_load((REPO / "roles/server/tasks/plan.yml").read_text())
    task = next(task for task in tasks if task["name"] == PROBE_TASK)
    argv = task["ansible.builtin.command"]["argv"]
    assert argv[:2] == ["/bin/sh", "-c"]
    return argv[2]


def sha1(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


@pytest.fixture
def host(tmp_path):
    etc = tmp_path / "etc"
    units = tmp_path / "units"
    releases = tmp_path / "releases"
    for directory in (etc, units, releases / "2.0.0"):
        directory.mkdir(parents=True)
    files = {}
    for name, text in (("environment", "A=1\n"), ("gunicorn.conf.py", "workers = 2\n"), ("instance.json", "{}\n")):
        files[name] = etc / name
        files[name].write_text(text)
        files[name].chmod(0o640)
    unit = units / "gunicorn-api.service"
    unit.write_text("[Service]\n")
    unit.chmod(0o644)
    socket = units / "gunicorn-api-listen-0123abcd.socket"
    socket.write_text("[Socket]\n")
    socket.chmod(0o644)
    (units / "gunicorn-api-listen-notahexname.socket").write_text("not matched by the glob\n")
    (tmp_path / "current").symlink_to(releases / "2.0.0")
    stamp = releases / "2.0.0" / ".graceful-installed"
    stamp.write_text("f" * 64 + "\n")
    return {
        "tmp": tmp_path,
        "files": files,
        "unit": unit,
        "socket": socket,
        "current": tmp_path / "current",
        "marker": etc / "restart-pending",
        "stamp": stamp,
        "sockets_glob": str(units / ("gunicorn-api-listen-" + "[0-9a-f]" * 8 + ".socket")),
        "release_dir": str(releases / "2.0.0"),
    }


def run_probe(host) -> str:
    argv = [
        "/bin/sh", "-c", probe_script(), "probe", "graceful-gunicorn-probe-test-no-such.service",
        str(host["current"]), str(host["marker"]), str(host["stamp"]), host["sockets_glob"],
        *(str(path) for path in host["files"].values()), str(host["unit"]),
    ]  # fmt: skip
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wanted_for(host):
    def file(path, mode, group):
        return {"sha1": sha1(path), "mode": mode, "owner": "root", "group": group}

    files = {str(path): file(path, "0640", "root") for path in host["files"].values()}
    files[str(host["unit"])] = file(host["unit"], "0644", "root")
    files[str(host["socket"])] = file(host["socket"], "0644", "root")
    return {
        "files": files,
        "release_files": [str(host["files"]["gunicorn.conf.py"]), str(host["files"]["instance.json"])],
        "environment_file": str(host["files"]["environment"]),
        "socket_units": [str(host["socket"])],
        "socket_activation": False,
        "release": "2.0.0",
        "release_dir": host["release_dir"],
        "installed": "f" * 64,
    }


def test_the_probe_reports_files_links_stamp_and_socket_units(host):
    observed = parse_probe(run_probe(host))
    assert observed["current"] == host["release_dir"]
    assert observed["marker"] == "no"
    assert observed["installed"] == "f" * 64
    assert observed["listeners"] == "no"
    # only the glob's socket units, each also compared as a file
    assert observed["sockets"] == {str(host["socket"])}
    assert observed["files"][str(host["socket"])]["sha1"] == sha1(host["socket"])
    environment = observed["files"][str(host["files"]["environment"])]
    assert environment == {"mode": "640", "owner": "root", "group": "root", "sha1": sha1(host["files"]["environment"])}


def test_the_probe_and_the_plan_agree_on_a_host_that_has_what_is_wanted(host):
    wanted = wanted_for(host)
    output = run_probe(host)
    # systemctl knows no such unit: the only reason for the whole role is the service
    plan = rollout_plan(output, wanted, master_release="2.0.0")
    assert plan["plan"] == "full"
    assert len(plan["reasons"]) == 1 and plan["reasons"][0].startswith("the service is "), plan
    active_line = next(line for line in output.splitlines() if line.startswith("active="))
    plan = rollout_plan(output.replace(active_line, "active=active"), wanted, master_release="2.0.0")
    assert plan["plan"] == "none"


def test_a_link_in_place_of_a_file_a_marker_or_a_foreign_stamp_is_seen(host):
    environment = host["files"]["environment"]
    real = host["tmp"] / "elsewhere"
    environment.rename(real)
    environment.symlink_to(real)
    host["marker"].symlink_to(real)
    host["stamp"].unlink()
    host["stamp"].symlink_to(real)
    observed = parse_probe(run_probe(host))
    assert observed["files"][str(environment)] is None
    assert observed["marker"] == "yes"
    assert observed["installed"] == ""
