"""The server role's decision of what a run's changes need (graceful.gunicorn.change_action)."""

import hashlib
import re

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.graceful.gunicorn.plugins.filter.change_action import FilterModule as ChangeFilters
from ansible_collections.graceful.gunicorn.plugins.filter.change_action import change_action
from ansible_collections.graceful.gunicorn.plugins.filter.socket_listen import socket_listen
from ansible_collections.graceful.gunicorn.plugins.filter.socket_unit_name import FilterModule as SocketFilters
from ansible_collections.graceful.gunicorn.plugins.filter.socket_unit_name import socket_unit_name

# changed kinds, preload_app, restart_pending, restart_mode -> action, restart still owed
TABLE = [
    # nothing to do
    ((), False, False, "immediate", "none", False),
    (("manifest",), True, False, "immediate", "none", False),
    # one kind at a time
    (("code",), False, False, "immediate", "upgrade", False),
    (("code",), True, False, "immediate", "upgrade", False),
    (("config",), False, False, "immediate", "reload", False),
    (("config",), True, False, "immediate", "reload", False),
    (("environment",), False, False, "immediate", "reload", False),
    (("environment",), True, False, "immediate", "upgrade", False),
    (("unit",), False, False, "immediate", "restart", False),
    (("sockets",), True, False, "immediate", "restart", False),
    (("adopt",), True, False, "immediate", "restart", False),
    # several together: one action that applies them all
    (("config", "environment"), False, False, "immediate", "reload", False),
    (("config", "environment"), True, False, "immediate", "upgrade", False),
    (("config", "code"), False, False, "immediate", "upgrade", False),
    (("environment", "code", "config", "manifest"), False, False, "immediate", "upgrade", False),
    (("unit", "code", "environment", "config"), True, False, "immediate", "restart", False),
    (("sockets", "config"), False, False, "immediate", "restart", False),
    # a restart an earlier run left pending
    ((), False, True, "immediate", "restart", False),
    (("config",), False, True, "immediate", "restart", False),
    ((), False, True, "deferred", "none", True),
    (("config",), True, True, "deferred", "reload", True),
    # deferred: the rest is applied as if the unit had not changed, the restart stays owed
    (("unit",), False, False, "deferred", "none", True),
    (("unit", "config"), False, False, "deferred", "reload", True),
    (("unit", "environment"), False, False, "deferred", "reload", True),
    (("unit", "environment"), True, False, "deferred", "upgrade", True),
    (("sockets", "code"), False, False, "deferred", "upgrade", True),
    (("adopt", "unit", "sockets"), True, False, "deferred", "none", True),
    # deferred without a unit change owes nothing
    (("environment",), True, False, "deferred", "upgrade", False),
    (("config",), False, False, "deferred", "reload", False),
]


@pytest.mark.parametrize(("kinds", "preload", "pending", "mode", "action", "owed"), TABLE)
def test_decision_table(kinds, preload, pending, mode, action, owed):
    decision = change_action(
        dict.fromkeys(kinds, True), preload_app=preload, was_active=True, restart_pending=pending, restart_mode=mode
    )
    assert decision["action"] == action
    assert decision["restart_pending"] is owed
    assert set(decision["reasons"]) == set(kinds) | ({"pending"} if pending else set())


@pytest.mark.parametrize("mode", ["immediate", "deferred"])
@pytest.mark.parametrize("kinds", [(), ("unit",), ("code", "environment", "sockets"), ("adopt",)])
def test_a_stopped_service_is_started_by_the_role_and_owes_nothing(kinds, mode):
    decision = change_action(
        dict.fromkeys(kinds, True), preload_app=True, was_active=False, restart_pending=True, restart_mode=mode
    )
    assert decision["action"] == "none"
    assert decision["restart_pending"] is False


def test_unchanged_kinds_given_as_false_count_as_unchanged():
    decision = change_action({"unit": False, "config": True, "code": False}, preload_app=False, was_active=True)
    assert decision == {"action": "reload", "restart_pending": False, "reasons": ["config"]}


@pytest.mark.parametrize(
    ("changes", "kwargs", "named"),
    [
        ({"units": True}, {}, "units"),
        ({"unit": "yes"}, {}, "unit"),
        ({"unit": True}, {"preload_app": "true"}, "preload_app"),
        ({}, {"was_active": None}, "was_active"),
        ({}, {"restart_pending": 1}, "restart_pending"),
        ({}, {"restart_mode": "later"}, "restart_mode"),
        (["unit"], {}, "mapping"),
    ],
)
def test_refuses_bad_input_naming_it(changes, kwargs, named):
    arguments = {"preload_app": False, "was_active": True}
    arguments.update(kwargs)
    with pytest.raises(AnsibleFilterError, match=re.escape(named)):
        change_action(changes, **arguments)


@pytest.mark.parametrize(
    "bind", ["127.0.0.1:8000", "0.0.0.0:80", "[::1]:8000", "unix:/run/gunicorn-api/gunicorn.sock", "localhost:9"]
)
def test_socket_unit_name(bind):
    name = socket_unit_name("gunicorn-api", bind)
    assert name == "gunicorn-api-listen-" + hashlib.sha256(bind.encode()).hexdigest()[:8]
    assert re.fullmatch(r"gunicorn-api-listen-[0-9a-f]{8}", name)


def test_socket_unit_names_differ_per_bind_and_per_instance():
    binds = ["127.0.0.1:8000", "127.0.0.1:8001", "[::1]:8000", "unix:/run/gunicorn-api/gunicorn.sock"]
    names = {socket_unit_name("gunicorn-api", bind) for bind in binds}
    assert len(names) == len(binds)
    assert socket_unit_name("gunicorn-api", binds[0]) != socket_unit_name("gunicorn-web", binds[0])


@pytest.mark.parametrize(
    ("service", "bind"),
    [
        ("api", "127.0.0.1:8000"),
        ("gunicorn-api\n", "127.0.0.1:8000"),
        ("gunicorn-../x", "127.0.0.1:8000"),
        ("gunicorn-API", "127.0.0.1:8000"),
        ("gunicorn-api", ""),
        ("gunicorn-api", None),
    ],
)
def test_socket_unit_name_refuses(service, bind):
    with pytest.raises(AnsibleFilterError):
        socket_unit_name(service, bind)


def test_filter_modules_export():
    assert ChangeFilters().filters()["change_action"] is change_action
    assert SocketFilters().filters()["socket_unit_name"] is socket_unit_name


def test_socket_unit_name_of_a_list_keeps_the_order():
    binds = ["127.0.0.1:8001", "unix:/run/gunicorn-api/gunicorn.sock", "127.0.0.1:8000"]
    assert socket_unit_name("gunicorn-api", binds) == [socket_unit_name("gunicorn-api", bind) for bind in binds]
    with pytest.raises(AnsibleFilterError):
        socket_unit_name("gunicorn-api", ["127.0.0.1:8000", ""])


@pytest.mark.parametrize(
    ("bind", "address", "family"),
    [
        ("127.0.0.1:8000", "127.0.0.1:8000", "ipv4"),
        ("0.0.0.0:80", "0.0.0.0:80", "ipv4"),
        (":8001", "0.0.0.0:8001", "ipv4"),
        ("localhost:9000", "127.0.0.1:9000", "ipv4"),
        ("[::1]:8000", "[::1]:8000", "ipv6"),
        ("[::]:8000", "[::]:8000", "ipv6"),
        ("unix:/run/gunicorn-api/gunicorn.sock", "/run/gunicorn-api/gunicorn.sock", "unix"),
    ],
)
def test_socket_listen(bind, address, family):
    assert socket_listen(bind) == {"address": address, "family": family}


@pytest.mark.parametrize(
    "bind",
    [
        "example.com:80",
        "127.0.0.1:0",
        "127.0.0.1:70000",
        "300.0.0.1:80",
        "127.0.0.1:8000\n",
        "unix:/run/x y.sock",
        "unix:/run/x.sock\nListenStream=0.0.0.0:22",
        "unix:relative.sock",
        "",
        None,
    ],
)
def test_socket_listen_refuses(bind):
    with pytest.raises(AnsibleFilterError):
        socket_listen(bind)
