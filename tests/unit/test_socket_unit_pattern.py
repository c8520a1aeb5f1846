"""The glob the server role finds an instance's stale socket units with (vars/main.yml) matches that instance's socket
unit files only.

The role removes (stops, disables, deletes) every root-owned file in /etc/systemd/system that the glob matches and
whose bind is no longer configured, with state: absent all of them. Instance names may contain "-listen-", so
another instance's socket units must not match. The glob is rendered from the role's vars file with Jinja and
matched with fnmatch, as ansible.builtin.find matches its patterns.
"""

import fnmatch
from pathlib import Path

import jinja2
import pytest
import yaml

from ansible_collections.graceful.gunicorn.plugins.filter.socket_unit_name import socket_unit_name

REPO = Path(__file__).resolve().parents[2]
BINDS = ["127.0.0.1:8000", "[::1]:8000", "unix:/run/gunicorn-api/gunicorn.sock", "0.0.0.0:80"]


def pattern(instance):
    role_vars = yaml.safe_load((REPO / "roles" / "server" / "vars" / "main.yml").read_text())
    return jinja2.Template(role_vars["__gunicorn_socket_unit_pattern"]).render(
        __gunicorn_service="gunicorn-" + instance
    )


def unit_files(instance):
    return [name + ".socket" for name in socket_unit_name("gunicorn-" + instance, BINDS)]


@pytest.mark.parametrize("instance", ["api", "a", "api-listen-x", "web_2"])
def test_matches_the_instance_socket_units(instance):
    glob = pattern(instance)
    assert all(fnmatch.fnmatchcase(name, glob) for name in unit_files(instance)), glob


@pytest.mark.parametrize(
    ("instance", "other"),
    [
        ("api", "api-listen-x"),
        ("api", "api-listen-abcdef12"),
        ("api", "api-listen-0"),
        ("api-listen", "api-listen-listen-1"),
    ],
)
def test_leaves_other_instances_alone(instance, other):
    glob = pattern(instance)
    assert not any(fnmatch.fnmatchcase(name, glob) for name in unit_files(other)), glob


@pytest.mark.parametrize(
    "name",
    [
        "gunicorn-api.service",
        "gunicorn-api-listen-abcdef12.socket.bak",
        "gunicorn-api-listen-abcdef1.socket",
        "gunicorn-api-listen-abcdef123.socket",
        "gunicorn-api-listen-ABCDEF12.socket",
        "gunicorn-api-listen-abcdef12.service",
    ],
)
def test_leaves_other_files_alone(name):
    assert not fnmatch.fnmatchcase(name, pattern("api"))
