"""The server role's unit, rendered by Ansible from the real template, passes systemd's own checks.

Each case is a valid set of variables (instance_problems finds nothing) rendered with the role's defaults and
vars (tests/validation/render_units.yml, on the controller only), into a directory per case: the service unit and
the socket unit of each bind, under the names the role gives them. systemd-analyze verify parses every unit
(it would report a carriage return that started a new directive, a bad specifier or an unknown setting), and
systemd-analyze security --offline rates the sandbox: exposure at most 1.7. The app root is moved under the
test's directory so that verify finds the ExecStart= binary, which it requires to exist.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ansible_collections.graceful.gunicorn.plugins.plugin_utils.gunicorn_checks import instance_problems

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
MAX_EXPOSURE = 1.7

CASES = {
    "tcp": {},
    "unix-socket-group": {
        "gunicorn_bind": "unix:/run/gunicorn-legacy/gunicorn.sock",
        "gunicorn_instance": "legacy",
        "gunicorn_socket_group": "www-data",
    },
    "port-80": {"gunicorn_bind": ["0.0.0.0:80", "[::]:80"], "gunicorn_app": "myapp:create_app(workers=2,debug=False)"},
    "writable-and-extra": {
        "gunicorn_read_write_paths": ["/var/lib/myapp", "/var/cache/myapp"],
        "gunicorn_unit_extra": ["LimitNOFILE=65536", "TimeoutStartSec=120", "Environment=MALLOC_ARENA_MAX=2"],
        "gunicorn_graceful_timeout": 120,
    },
    "no-mdwe": {"gunicorn_memory_deny_write_execute": False, "gunicorn_app": "myapp"},
    "no-socket-activation": {
        "gunicorn_socket_activation": False,
        "gunicorn_bind": ["127.0.0.1:8000", "127.0.0.1:8001"],
    },
}

pytestmark = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")


def checked(case):
    values = {"gunicorn_instance": "demo", "gunicorn_app": "myapp.main:app", "gunicorn_app_packages": ["myapp==1.0.0"]}
    values.update(case)
    values.setdefault("gunicorn_user", "gunicorn-" + values["gunicorn_instance"])
    values.setdefault("gunicorn_group", values["gunicorn_user"])
    return values


@pytest.fixture(scope="module")
def units(tmp_path_factory):
    root = tmp_path_factory.mktemp("units")
    cases = []
    for name, case in CASES.items():
        instance = case.get("gunicorn_instance", "demo")
        case = dict(case, gunicorn_root_base=str(root / "srv" / name), dir=str(root / name))
        (root / name).mkdir()
        binary = root / "srv" / name / instance / "current" / "venv" / "bin" / "graceful-gunicorn"
        binary.parent.mkdir(parents=True, exist_ok=True)
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
        cases.append(case)
    env = dict(
        os.environ,
        ANSIBLE_CONFIG=str(REPO / "tests" / "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=str(REPO / "build" / "collections"),
        ANSIBLE_NOCOLOR="1",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    result = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", str(REPO / "tests" / "validation" / "render_units.yml"),
         "-e", json.dumps({"cases": cases})],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return {name: root / name / f"gunicorn-{checked(CASES[name])['gunicorn_instance']}.service" for name in CASES}


def socket_units(service: Path) -> list:
    return sorted(service.parent.glob("*.socket"))


@pytest.mark.parametrize("name", list(CASES))
def test_the_case_is_valid(name):
    assert instance_problems(checked(CASES[name])) == []


@pytest.mark.parametrize("name", list(CASES))
def test_systemd_analyze_verify_accepts_the_units(units, name):
    unit = units[name]
    sockets = socket_units(unit)
    files = [unit, *sockets]
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *map(str, files)], capture_output=True, text=True, check=False, cwd=unit.parent
    )
    # Only these units' own lines: verify also loads the machine's units their dependencies name.
    own = [line for line in (result.stdout + result.stderr).splitlines() if any(f.name in line for f in files)]
    texts = "\n".join(f.read_text() for f in files)
    assert result.returncode == 0 and not own, texts + "\n" + result.stdout + result.stderr


@pytest.mark.parametrize("name", list(CASES))
def test_the_service_uses_one_socket_unit_per_bind(units, name):
    case = checked(CASES[name])
    binds = case.get("gunicorn_bind", "127.0.0.1:8000")
    binds = [binds] if isinstance(binds, str) else binds
    sockets = socket_units(units[name])
    lines = units[name].read_text().splitlines()
    if case.get("gunicorn_socket_activation", True) is False:
        assert sockets == [] and not any(line.startswith("Sockets=") for line in lines)
        return
    assert len(sockets) == len(binds)
    listens = sorted(line for s in sockets for line in s.read_text().splitlines() if line.startswith("ListenStream="))
    expected = sorted("ListenStream=" + (b[len("unix:") :] if b.startswith("unix:") else b) for b in binds)
    assert listens == expected
    named = " ".join(line.split("=", 1)[1] for line in lines if line.startswith("Sockets="))
    assert sorted(named.split()) == sorted(s.name for s in sockets)


@pytest.mark.parametrize("name", list(CASES))
def test_the_unit_says_what_the_variables_say(units, name):
    text = units[name].read_text()
    case = checked(CASES[name])
    lines = text.splitlines()
    assert f"User={case['gunicorn_user']}" in lines
    exec_start = [line for line in lines if line.startswith("ExecStart=")]
    assert len(exec_start) == 1 and exec_start[0].endswith(" " + case["gunicorn_app"]), exec_start
    assert "\r" not in text


@pytest.mark.parametrize("name", list(CASES))
def test_exposure_stays_low(units, name):
    result = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--no-pager", str(units[name])],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout
