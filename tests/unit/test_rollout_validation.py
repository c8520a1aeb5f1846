"""The rollout playbooks refuse bad variables in their first play, before any host is contacted.

Each bad value of a variable that reaches a unit, a path or a shell is tried four ways: as an inline extra
var (-e '{...}'), in an -e @file.json, as a host var and as a group var, against the real deploy and upgrade
playbooks run by ansible-playbook. The inventory's hosts point at a closed port on 127.0.0.1: contacting one
would show as UNREACHABLE (the control run proves it does), so a refusal must come from the controller-side
first play, name the variable, and leave no host contacted. The cases are dealt into rounds that never carry two
values of one variable; in the host and group var run each host carries one round, so one run covers them all.

The last tests run the reload playbook on hosts that fail or do not answer, and check the recap, the summary
and the exit status.
"""

import json
import os
import re
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# (variable, bad value, the name the refusal must start with). At most three values per variable: each
# round carries one value of every variable.
ROLE_CASES = [
    ("gunicorn_app", "graceful_demo_asgi:app\rUser=root", "gunicorn_app"),
    ("gunicorn_app", "graceful_demo_asgi:app --bind 0.0.0.0:1", "gunicorn_app"),
    ("gunicorn_app", "graceful_demo_asgi:%n$HOME\n", "gunicorn_app"),
    ("gunicorn_app_packages", '["httpbin==0.10.2"]', "gunicorn_app_packages must be a list, got a string"),
    ("gunicorn_app_packages", ["--index-url=http://127.0.0.1:9/simple"], "gunicorn_app_packages[0]"),
    ("gunicorn_instance", "demo\n", "gunicorn_instance"),
    ("gunicorn_instance", "../etc", "gunicorn_instance"),
    ("gunicorn_user", "root\n", "gunicorn_user"),
    ("gunicorn_user", "root", "gunicorn_user"),
    ("gunicorn_group", "shadow", "gunicorn_group"),
    ("gunicorn_socket_group", "root", "gunicorn_socket_group"),
    ("gunicorn_socket_group", "www-data\rUser=root", "gunicorn_socket_group"),
    ("gunicorn_socket_group", "disk", "gunicorn_socket_group"),
    ("gunicorn_read_write_paths", ["/"], "gunicorn_read_write_paths[0]"),
    ("gunicorn_read_write_paths", ["/var/lib/../../etc"], "gunicorn_read_write_paths[0]"),
    ("gunicorn_read_write_paths", ["/var/lib/my app%n"], "gunicorn_read_write_paths[0]"),
    ("gunicorn_bind", "unix:/tmp/evil.sock", "gunicorn_bind"),
    ("gunicorn_bind", ["127.0.0.1:8000", "unix:/run/gunicorn-demo/a b.sock"], "gunicorn_bind[1]"),
    ("gunicorn_bind", "127.0.0.1:8000\n", "gunicorn_bind"),
    ("gunicorn_environment", {"PATH\nX": "1"}, "gunicorn_environment"),
    ("gunicorn_environment", {"GREETING": "hi\rUser=root"}, "gunicorn_environment.GREETING"),
    ("gunicorn_secret_environment", {"BAD KEY": "x"}, "gunicorn_secret_environment"),
    ("gunicorn_root_base", "", "gunicorn_root_base"),
    ("gunicorn_root_base", "/", "gunicorn_root_base"),
    ("gunicorn_root_base", "/usr/lib", "gunicorn_root_base"),
    ("gunicorn_config_base", "/etc/systemd/system", "gunicorn_config_base"),
    ("gunicorn_config_base", "etc/gunicorn", "gunicorn_config_base"),
    ("gunicorn_settings", {"backlog": 2**70}, "gunicorn_settings.backlog"),
    ("gunicorn_settings", {"worker": 2}, "gunicorn_settings.worker"),
    ("gunicorn_workers", "9" * 40, "gunicorn_workers"),
    ("gunicorn_graceful_timeout", "30\nUser=root", "gunicorn_graceful_timeout"),
    ("gunicorn_url_prefix", "/api/", "gunicorn_url_prefix"),
    ("gunicorn_url_prefix_env", "SCRIPT_NAME\n", "gunicorn_url_prefix_env"),
    ("gunicorn_health_path", "/health\r\n", "gunicorn_health_path"),
    ("gunicorn_worker_class", "gthread; rm -rf /", "gunicorn_worker_class"),
    ("gunicorn_unit_extra", ["User=root"], "gunicorn_unit_extra[0]"),
    ("gunicorn_unit_extra", ["LimitNOFILE=1\rExecStartPre=+/bin/sh"], "gunicorn_unit_extra[0]"),
    ("gunicorn_python", "/tmp/python3", "gunicorn_python"),
    ("gunicorn_pip_index_url", "https://pypi.example\n--trusted-host x", "gunicorn_pip_index_url"),
    ("gunicorn_config_extra", "def broken(:\n", "gunicorn_config_extra"),
    ("gunicorn_health_status", "[200]", "gunicorn_health_status must be a list, got a string"),
    ("gunicorn_version", "27.0.1\n", "gunicorn_version"),
]
# The rollout's own variables: extra vars only (they steer the playbook, not a host).
ROLLOUT_CASES = [
    ("gunicorn_serial", "0", "gunicorn_serial"),
    ("gunicorn_max_fail_percentage", 101, "gunicorn_max_fail_percentage"),
    ("gunicorn_bake_seconds", "10\n", "gunicorn_bake_seconds"),
    ("gunicorn_keep_releases", "9" * 30, "gunicorn_keep_releases"),
    ("gunicorn_drain_tasks", "/etc/passwd", "gunicorn_drain_tasks"),
    ("gunicorn_undrain_tasks", str(REPO / "playbooks" / "rollout" / "host.yml"), "gunicorn_undrain_tasks"),
    ("gunicorn_stage", "sometimes", "gunicorn_stage must be auto, true or false"),
]
# Refused on its own: an extra gunicorn_hook_dirs turns the hook file checks off, so it gets a run of its own.
HOOK_DIRS_CASE = ("gunicorn_hook_dirs", ["/"], "gunicorn_hook_dirs is given as an extra variable")
UPGRADE_ONLY_CASES = [
    ("gunicorn_release", "1.0.0\n", "gunicorn_release"),
    ("gunicorn_app_package", "graceful-demo-asgi --index-url http://127.0.0.1:9", "gunicorn_app_package"),
]

GOOD = {
    "gunicorn_instance": "demo",
    "gunicorn_app": "graceful_demo_asgi:app",
    "gunicorn_app_packages": ["graceful-demo-asgi==1.0.0"],
    "gunicorn_worker_class": "asgi",
}
PLAYBOOKS = {"deploy": [], "upgrade": ["-e", "gunicorn_release=1.0.0"]}
FATAL_RE = re.compile(r"^fatal: \[(?P<host>[^\]]+)\]: (?P<kind>FAILED|UNREACHABLE)! => (?P<body>\{.*\})$", re.M)


def closed_port():
    """A loopback port nothing listens on: connecting to it is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_inventory(path, port, host_vars=None, group_vars=None, hosts=1):
    """A JSON (YAML) inventory: every host unreachable on 127.0.0.1:port; group gunicorn_hosts."""
    connection = {
        "ansible_host": "127.0.0.1",
        "ansible_port": port,
        "ansible_user": "nobody",
        "ansible_connection": "ssh",
    }
    children = {}
    host_entries = {}
    names = [f"h{i}" for i in range(hosts)]
    for index, name in enumerate(names):
        host_entries[name] = dict((host_vars or {}).get(index, {}))
        if group_vars and index in group_vars:
            children[f"bad{index}"] = {"hosts": {name: {}}, "vars": group_vars[index]}
    inventory = {
        "all": {
            "vars": dict(GOOD),
            "children": {"gunicorn_hosts": {"hosts": host_entries, "children": children, "vars": connection}},
        }
    }
    path.write_text(json.dumps(inventory, indent=1))
    return names


def run_playbook(playbook, inventory, *extra):
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(REPO / "tests" / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
        ANSIBLE_CALLBACK_RESULT_FORMAT="json",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_TIMEOUT="5",
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    command = [
        str(BIN / "ansible-playbook"),
        "-i",
        str(inventory),
        f"graceful.gunicorn.{playbook}",
        *PLAYBOOKS.get(playbook, []),
        *extra,
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=90, check=False)
    output = result.stdout + result.stderr
    fatals = {}
    for match in FATAL_RE.finditer(output):
        fatals.setdefault(match.group("host"), []).append((match.group("kind"), json.loads(match.group("body"))))
    return result.returncode, output, fatals


def assert_refused_first(rc, output, fatals, hosts):
    assert rc != 0, output[-3000:]
    assert "UNREACHABLE!" not in output, "a host was contacted:\n" + output[-3000:]
    assert "Take this host's turn" not in output, "the host play started:\n" + output[-3000:]
    assert set(fatals) == set(hosts), output[-3000:]


def message_of(fatals, host):
    kind, body = fatals[host][0]
    assert kind == "FAILED"
    return body.get("msg", "")


def names_variable(message, label):
    """The refusal names the variable at the start of a problem line (or of the message)."""
    return any(line.lstrip("- ").startswith(label) for line in message.splitlines())


def rounds(cases):
    """Cases grouped so that a run never carries two values of one variable."""
    out = []
    for case in cases:
        for group in out:
            if case[0] not in {c[0] for c in group}:
                group.append(case)
                break
        else:
            out.append([case])
    return out


def cases_for(playbook):
    return ROLLOUT_CASES + (UPGRADE_ONLY_CASES if playbook == "upgrade" else [])


@pytest.fixture(scope="module")
def port():
    return closed_port()


def extra_rounds(playbook):
    return rounds(ROLE_CASES) + rounds(cases_for(playbook)) + [[HOOK_DIRS_CASE]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, port):
    """Every refusal run, two at a time (the machine has two cores), keyed by (playbook, mode[, round])."""
    jobs = {}
    root = tmp_path_factory.mktemp("refusals")
    role_rounds = rounds(ROLE_CASES)
    for playbook in PLAYBOOKS:
        # hosts h0..hN-1 carry a round each as host vars, the next N as group vars of a group of their own
        inventory = root / f"{playbook}-inventory.json"
        as_vars = [{name: value for name, value, _label in group} for group in role_rounds]
        count = len(as_vars)
        hosts = write_inventory(
            inventory,
            port,
            host_vars=dict(enumerate(as_vars)),
            group_vars={count + index: values for index, values in enumerate(as_vars)},
            hosts=2 * count,
        )
        jobs[(playbook, "inventory")] = (playbook, inventory, hosts, [])
        single = root / f"{playbook}-single.json"
        hosts = write_inventory(single, port)
        for number, group in enumerate(extra_rounds(playbook)):
            values = {name: value for name, value, _label in group}
            jobs[(playbook, "inline", number)] = (playbook, single, hosts, ["-e", json.dumps(values)])
            vars_file = root / f"{playbook}-{number}.json"
            vars_file.write_text(json.dumps(values))
            jobs[(playbook, "file", number)] = (playbook, single, hosts, ["-e", f"@{vars_file}"])
        jobs[(playbook, "control")] = (playbook, single, hosts, [])

    def run(key):
        playbook, inventory, hosts, extra = jobs[key]
        return key, (hosts, *run_playbook(playbook, inventory, *extra))

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, list(jobs)))


@pytest.mark.parametrize("playbook", list(PLAYBOOKS))
def test_the_control_run_contacts_the_hosts(runs, playbook):
    # Good variables pass the first play and the host play tries the (closed) port: so a refusal run that
    # shows no UNREACHABLE really stopped before any connection.
    hosts, rc, output, fatals = runs[(playbook, "control")]
    assert rc != 0
    assert "Take this host's turn" in output, output[-3000:]
    # unreachable at the start of its turn (ignored there, so that the summary runs), and again in the
    # summary's last play, which leaves it unreachable in the recap
    kinds = [kind for kind, _body in fatals[hosts[0]]]
    assert kinds and set(kinds) == {"UNREACHABLE"}, output[-3000:]
    assert re.search(rf"{re.escape(hosts[0])}\s+unreachable\s", output), output[-3000:]


@pytest.mark.parametrize("playbook", list(PLAYBOOKS))
@pytest.mark.parametrize("mode", ["host", "group"])
def test_inventory_vars_are_refused_before_any_host_is_contacted(runs, playbook, mode):
    hosts, rc, output, fatals = runs[(playbook, "inventory")]
    assert_refused_first(rc, output, fatals, hosts)
    groups = rounds(ROLE_CASES)
    carriers = hosts[: len(groups)] if mode == "host" else hosts[len(groups) :]
    for host, group in zip(carriers, groups):
        message = message_of(fatals, host)
        assert "Nothing was changed on any host." in message, message
        for name, value, label in group:
            assert names_variable(message, label), f"{mode} var {name}={value!r} on {host}: {message}"


@pytest.mark.parametrize("playbook", list(PLAYBOOKS))
@pytest.mark.parametrize("mode", ["inline", "file"])
def test_extra_vars_are_refused_before_any_host_is_contacted(runs, playbook, mode):
    for number, group in enumerate(extra_rounds(playbook)):
        hosts, rc, output, fatals = runs[(playbook, mode, number)]
        assert_refused_first(rc, output, fatals, hosts)
        message = message_of(fatals, hosts[0])
        for name, value, label in group:
            assert names_variable(message, label), f"extra var ({mode}) {name}={value!r}: {message}"


# --- The recap and the summary after failed and unreachable hosts ---------------------------------------
# Real ansible-playbook runs of the reload playbook on three hosts: two reached with the local connection,
# where the instance does not exist, so their turn fails in its preflight (a read-only gunicorn_info), and
# one on the closed port, unreachable. No host has a gunicorn instance: what is checked is how the playbook
# reports failures (the recap AWX's "relaunch on failed hosts" reads, the JSON summary, the exit status),
# not the reload itself, which the lab tests run on real hosts.

RECAP_RE = re.compile(
    r"^(?P<host>\S+)\s+: ok=\d+\s+changed=\d+\s+unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)"
    r"\s+skipped=\d+\s+rescued=(?P<rescued>\d+)",
    re.M,
)
DRILL_INSTANCE = "rolloutdrill"


def recap(output):
    return {
        m.group("host"): {k: int(m.group(k)) for k in ("unreachable", "failed", "rescued")}
        for m in RECAP_RE.finditer(output)
    }


def failed_in_recap(counts):
    """What AWX relaunches on: hosts with failures or unreachable in the recap."""
    return {host for host, c in counts.items() if c["failed"] or c["unreachable"]}


@pytest.fixture(scope="module")
def drill_inventory(tmp_path_factory, port):
    path = tmp_path_factory.mktemp("drill") / "inventory.json"
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    unreachable = {
        "ansible_connection": "ssh",
        "ansible_host": "127.0.0.1",
        "ansible_port": port,
        "ansible_user": "nobody",
    }
    inventory = {
        "all": {
            "vars": {"gunicorn_instance": DRILL_INSTANCE, "gunicorn_become": False},
            "children": {"gunicorn_hosts": {"hosts": {"d1": local, "d2": unreachable, "d3": local}}},
        }
    }
    path.write_text(json.dumps(inventory))
    return path


def drill(inventory, tmp_path, *extra):
    summary_file = tmp_path / "summary.json"
    rc, output, _fatals = run_playbook("reload", inventory, "-e", f"gunicorn_summary_file={summary_file}", *extra)
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
    return rc, output, recap(output), summary


def test_every_failed_host_fails_in_the_recap_and_the_summary_is_written(drill_inventory, tmp_path):
    # Serial 1 and a budget of 100%: each batch of one fails entirely, which must not end the playbook.
    rc, output, counts, summary = drill(drill_inventory, tmp_path, "-e", "gunicorn_max_fail_percentage=100")
    assert rc != 0, output[-3000:]
    assert summary is not None, "no summary written:\n" + output[-3000:]
    hosts = summary["hosts"]
    assert {h: e["status"] for h, e in hosts.items()} == {"d1": "failed", "d2": "unreachable", "d3": "failed"}
    assert hosts["d1"]["failed_phase"] == "preflight" and "no gunicorn master" in hosts["d1"]["message"]
    assert hosts["d2"]["failed_phase"] == "connect"
    assert summary["ok"] is False and summary["stopped"] is False
    # failed for real, not merely rescued, and the unreachable host unreachable
    assert failed_in_recap(counts) == {"d1", "d2", "d3"}, counts
    assert counts["d1"]["failed"] == 1 and counts["d3"]["failed"] == 1 and counts["d2"]["unreachable"] == 1
    assert counts.get("localhost", {"failed": 0})["failed"] == 0
    # the run names host, phase and cause
    assert re.search(r"failed on d1: failed in phase preflight .*no gunicorn master", output), output[-3000:]


def test_a_stopped_rollout_fails_only_the_failed_host(drill_inventory, tmp_path):
    # Budget 0: the first host fails, the rollout stops, the other two are reported untouched and stay out of
    # the recap's failed hosts (a relaunch on failed hosts reaches d1 alone).
    rc, output, counts, summary = drill(drill_inventory, tmp_path)
    assert rc != 0, output[-3000:]
    assert {h: e["status"] for h, e in summary["hosts"].items()} == {
        "d1": "failed",
        "d2": "untouched",
        "d3": "untouched",
    }
    assert summary["stopped"] is True
    assert failed_in_recap(counts) == {"d1"}, counts
    assert "untouched: d2, d3" in output


def test_a_limit_to_the_unreachable_host_still_reports_it(drill_inventory, tmp_path):
    # localhost is outside the limit: the checks and the summary run on the target hosts all the same.
    rc, output, counts, summary = drill(drill_inventory, tmp_path, "--limit", "d2")
    assert rc != 0, output[-3000:]
    assert summary is not None, output[-3000:]
    assert list(summary["hosts"]) == ["d2"] and summary["hosts"]["d2"]["status"] == "unreachable"
    assert failed_in_recap(counts) == {"d2"}, counts
