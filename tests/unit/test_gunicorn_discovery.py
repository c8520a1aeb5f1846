"""Parsing and identity checks of plugins/module_utils/gunicorn_proc.py and the health probe's pure parts."""

import pytest

from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_common as common
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_health as health
from ansible_collections.graceful.gunicorn.plugins.module_utils import gunicorn_proc as proc

STAT = "1234 (python3 (x)) S 1 1234 1234 0 -1 4194560 5000 0 0 0 10 5 0 0 20 0 3 0 987654 123 456"


def test_parse_stat_handles_parentheses_in_comm():
    info = proc.parse_stat(STAT)
    assert info == {"comm": "python3 (x)", "state": "S", "ppid": 1, "starttime": 987654}


@pytest.mark.parametrize(
    ("text", "pid"),
    [("4242\n", 4242), ("", None), ("  ", None), ("abc", None), ("0", None), ("-5", None), (None, None)],
)
def test_parse_pidfile(text, pid):
    assert proc.parse_pidfile(text) == pid


def test_parse_memory_prefers_smaps_rollup():
    smaps = "55d0-7ff0 ---p 00000000 00:00 0 [rollup]\nRss:      10240 kB\nPss:       4096 kB\n"
    assert proc.parse_memory(smaps, "VmRSS: 1 kB") == {"rss": 10240 * 1024, "pss": 4096 * 1024}
    assert proc.parse_memory(None, "Name: x\nVmRSS:   2048 kB\n") == {"rss": 2048 * 1024, "pss": None}


def test_parse_environ():
    assert proc.parse_environ(b"A=1\0GUNICORN_PID=42\0B=x=y\0") == {"A": "1", "GUNICORN_PID": "42", "B": "x=y"}


@pytest.mark.parametrize(
    ("argv", "flavour", "config"),
    [
        (["/srv/venv/bin/python3", "/srv/venv/bin/gunicorn", "-c", "/etc/g.py", "app:app"], "stock", "/etc/g.py"),
        (["/srv/venv/bin/python3", "/srv/venv/bin/graceful-gunicorn", "--config=/etc/g.py"], "graceful", "/etc/g.py"),
        (["python", "-m", "gunicorn", "-c/etc/g.py", "app"], "stock", "/etc/g.py"),
        (["python", "-m", "graceful_arbiter.launcher", "app"], "graceful", None),
        (["/usr/bin/sleep", "100"], None, None),
        (["/usr/bin/python3", "/opt/gunicorn_tools/x.py"], None, None),
        ([], None, None),
    ],
)
def test_classify_cmdline(argv, flavour, config):
    info = proc.classify_cmdline(argv)
    assert info["flavour"] == flavour
    assert info["config"] == config


def test_classify_process_title():
    info = proc.classify_cmdline(["gunicorn: worker [shop]"])
    assert info["role"] == "worker"


def snapshot_of(argv):
    return {"master": {"flavour": proc.classify_cmdline(argv)["flavour"]}}


TITLE = ["gunicorn: master [gunicorn-airflow-core]"]  # setproctitle, which Airflow installs, rewrote argv
GRACEFUL = ["/srv/venv/bin/python3", "/srv/venv/bin/graceful-gunicorn", "-c", "/etc/g.py"]
STOCK = ["/srv/venv/bin/python3", "/srv/venv/bin/gunicorn", "-c", "/etc/g.py"]
UNIT_GRACEFUL = "/srv/gunicorn/api/current/venv/bin/graceful-gunicorn"
UNIT_STOCK = "/srv/gunicorn/api/current/venv/bin/gunicorn"


@pytest.mark.parametrize(
    ("argv", "requested", "unit_program", "flavour"),
    [
        (TITLE, "auto", UNIT_GRACEFUL, "graceful"),  # the title hides the command line: the unit's program tells
        (TITLE, "auto", UNIT_STOCK, "stock"),
        (TITLE, "auto", None, "stock"),  # no unit: nothing root-owned says it is the bundled arbiter
        (GRACEFUL, "auto", None, "graceful"),
        (STOCK, "auto", UNIT_GRACEFUL, "stock"),  # a command line that says stock is not overruled
        (TITLE, "graceful", None, "graceful"),  # as requested
        (GRACEFUL, "stock", UNIT_GRACEFUL, "stock"),
    ],
)
def test_flavour_when_a_process_title_hides_the_command_line(argv, requested, unit_program, flavour):
    assert common.flavour_of(snapshot_of(argv), requested, unit_program) == flavour


@pytest.mark.parametrize(
    ("value", "program"),
    [
        (
            "{ path=/srv/gunicorn/api/current/venv/bin/graceful-gunicorn ; argv[]=/srv/gunicorn/api/current/venv/bin/"
            "graceful-gunicorn -c /etc/gunicorn/api/gunicorn.conf.py app:app ; ignore_errors=no ; start_time=[n/a] }",
            UNIT_GRACEFUL,
        ),
        ("", None),
        (None, None),
    ],
)
def test_exec_start_program(value, program):
    assert common.exec_start_program(value) == program


@pytest.mark.parametrize(("mtime", "seen"), [(None, False), (1.7e9, False), (12345.6, True)])
def test_heartbeat_seen(mtime, seen):
    assert proc.heartbeat_seen(mtime) is seen


def test_resolve_target_from_instance():
    target = common.resolve_target(
        {"instance": "shop", "pidfile": None, "unit": None, "config": None, "control_socket": None}
    )
    assert target["pidfile"] == "/run/gunicorn-shop/master.pid"
    assert target["unit"] == "gunicorn-shop.service"
    assert target["config"] == "/etc/gunicorn/shop/gunicorn.conf.py"
    assert target["control_socket"] == "/run/gunicorn-shop/gunicorn.ctl"


def test_explicit_paths_win_over_instance():
    target = common.resolve_target(
        {"instance": "shop", "pidfile": "/tmp/p", "unit": "x.service", "config": None, "control_socket": None}
    )
    assert target["pidfile"] == "/tmp/p"
    assert target["unit"] == "x.service"


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"instance": "../x"}, "instance must match"),
        ({"instance": "shop\n"}, "instance must match"),
        ({"instance": "Shop"}, "instance must match"),
        ({"unit": "x.service\n"}, "unit must be a systemd service name"),
        ({"unit": "../x.service"}, "unit must be a systemd service name"),
        ({"pidfile": "run/x.pid"}, "pidfile must be an absolute path"),
        ({"pidfile": "/run/../etc/x.pid"}, "pidfile must be an absolute path"),
        ({"config": "/etc/x\r.py"}, "config must be an absolute path"),
        ({"release_link": "/srv/x/current\n"}, "release_link must be an absolute path"),
        ({"host_header": "a\r\nX-Evil: 1"}, "host_header must not contain"),
        ({"timeout": 0}, "timeout must be positive"),
        ({"health_checks": 0}, "health_checks"),
        ({"expected_status": [200, 700]}, "700"),
        ({"ca_path": "/nonexistent/ca.pem"}, "ca_path"),
    ],
)
def test_validate_params(params, problem):
    assert any(problem in p for p in common.validate_params(params))


def test_systemctl_show_parsing():
    props = common.parse_systemctl_show("LoadState=loaded\nActiveState=active\nMainPID=4242\n")
    assert props == {"LoadState": "loaded", "ActiveState": "active", "MainPID": "4242"}


def test_unit_state_without_unit():
    assert common.unit_state(None) == {
        "name": None,
        "checked": False,
        "reason": "no unit given",
        "active_state": None,
        "main_pid": None,
        "load_state": None,
        "control_group": None,
        "exec_start": None,
    }


def test_phases_record_timestamps():
    phases = common.Phases()
    phases.start("a")
    phases.start("b")
    phases.end(False, "broken")
    assert [p["name"] for p in phases.items] == ["a", "b"]
    assert phases.items[0]["ok"] is True and phases.items[1]["ok"] is False
    assert phases.items[1]["detail"] == "broken"
    assert phases.items[1]["ended"] >= phases.items[1]["started"]


PROBE_PARAMS = {
    "health_url": "http://127.0.0.1:8000",
    "health_path": "/health",
    "url_prefix": "",
    "expected_status": [200],
    "validate_certs": True,
    "health_timeout": 5.0,
}


@pytest.mark.parametrize(
    ("changes", "path"),
    [
        ({}, "/health"),
        ({"url_prefix": "/api/"}, "/api/health"),
        ({"url_prefix": "api", "health_path": "ping"}, "/api/ping"),
        ({"health_url": "http://127.0.0.1:8000/base/"}, "/base/health"),
    ],
)
def test_build_probe_paths(changes, path):
    params = dict(PROBE_PARAMS, **changes)
    assert health.build_probe(params)["path"] == path


def test_build_probe_rejects_bad_urls_and_patterns():
    with pytest.raises(ValueError):
        health.build_probe(dict(PROBE_PARAMS, health_url="ftp://x"))
    with pytest.raises(ValueError):
        health.build_probe(dict(PROBE_PARAMS, body_pattern="("))
    assert health.build_probe({"health_url": None, "health_socket": None}) is None


def test_describe_unix_socket_probe():
    probe = health.build_probe(dict(PROBE_PARAMS, health_url=None, health_socket="/run/app.sock"))
    assert health.describe(probe) == "http+unix:///run/app.sock/health"


@pytest.mark.parametrize(
    ("status", "body", "pattern", "ok"),
    [
        (200, b'{"status": "ok"}', None, True),
        (500, b"", None, False),
        (204, b"", None, True),
        (200, b'{"status": "degraded"}', '"status": "ok"', False),
        (200, b'{"status": "ok"}', '"status": "ok"', True),
    ],
)
def test_evaluate(status, body, pattern, ok):
    probe = health.build_probe(dict(PROBE_PARAMS, expected_status=[200, 204], body_pattern=pattern))
    assert health.evaluate(probe, status, body)[0] is ok


def test_health_tracker_streaks():
    tracker = health.HealthTracker()
    for ok in (True, False, True, True):
        tracker.record({"ok": ok})
    assert tracker.summary()["streak"] == 2
    assert tracker.summary()["failures"] == 1
    assert tracker.summary()["attempts"] == 4


@pytest.mark.parametrize(
    ("cwd", "release"),
    [
        ("/srv/gunicorn/shop/releases/2.4.1", "2.4.1"),
        ("/srv/gunicorn/shop/releases/2.4.1/app", "2.4.1"),
        ("/srv/gunicorn/shop/current", None),
        ("/srv/gunicorn/shop/releases", None),
        ("", None),
        (None, None),
    ],
)
def test_release_name_from_the_master_working_directory(cwd, release):
    assert proc.release_name(cwd) == release


@pytest.mark.parametrize(
    ("cwd", "release"),
    [
        ("/srv/gunicorn/shop/releases/2.4.1", "2.4.1"),
        ("/srv/gunicorn/shop/releases/2.4.1/app", "2.4.1"),
        # a working directory the app moved to, shaped like a release: not one of this instance's releases
        ("/run/gunicorn-shop/releases/evil", None),
        ("/srv/gunicorn/shop/releases-x/1", None),
    ],
)
def test_release_name_under_the_trusted_releases_tree(cwd, release):
    assert proc.release_name(cwd, "/srv/gunicorn/shop/releases") == release
