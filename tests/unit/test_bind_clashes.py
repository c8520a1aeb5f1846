"""Binds that cannot all listen at once are refused before anything changes (graceful.gunicorn.instance_problems).

Under socket activation each bind gets a socket unit of its own, named after the bind as written: two spellings of
one address (or an address and the wildcard on its port) would be two socket units of which the second can never
listen, and the restart that needs both would leave the instance down. Without socket activation gunicorn itself
fails to bind the second one.
"""

import pytest

from ansible_collections.graceful.gunicorn.plugins.plugin_utils.gunicorn_checks import instance_problems

BASE = {
    "gunicorn_instance": "api",
    "gunicorn_app": "myapi.main:app",
    "gunicorn_app_packages": ["myapi==1.2.3"],
    "gunicorn_user": "gunicorn-api",
    "gunicorn_group": "gunicorn-api",
}


def problems(binds, socket_activation=True):
    return instance_problems(dict(BASE, gunicorn_bind=binds, gunicorn_socket_activation=socket_activation))


@pytest.mark.parametrize(
    "binds",
    [
        ["127.0.0.1:8000", "127.0.0.1:8000"],
        ["127.0.0.1:8000", "localhost:8000"],
        [":8000", "0.0.0.0:8000"],
        ["10.0.0.5:8000", "0.0.0.0:8000"],
        ["0.0.0.0:8000", "127.0.0.1:8000"],
        ["[::1]:8000", "[0:0::1]:8000"],
        ["[::]:8000", "[::1]:8000"],
        ["unix:/run/gunicorn-api/a.sock", "unix:/run/gunicorn-api/a.sock"],
    ],
)
@pytest.mark.parametrize("socket_activation", [True, False])
def test_refused_naming_both_binds(binds, socket_activation):
    found = problems(binds, socket_activation)
    assert len(found) == 1, found
    assert found[0].startswith("gunicorn_bind")
    assert "cannot both listen" in found[0]
    assert "give each address once" in found[0]


@pytest.mark.parametrize(
    "binds",
    [
        ["127.0.0.1:8000", "127.0.0.1:8001"],
        ["0.0.0.0:80", "[::]:80"],
        ["127.0.0.1:8000", "127.0.0.2:8000", "[::1]:8000"],
        ["unix:/run/gunicorn-api/a.sock", "unix:/run/gunicorn-api/b.sock", "127.0.0.1:8000"],
    ],
)
def test_accepted(binds):
    assert problems(binds) == []
